//! A server program a scenario runs beside the hubs (the MQTT scenario's
//! Mosquitto, the cluster scenario's Redis): started on a free port of
//! 127.0.0.1 with a temporary directory of its own for its configuration,
//! data and logs, a few tries in case another program takes the port
//! between the probe and the server's bind, and waited for until it
//! answers. Killed, and its directory removed, on drop. What the program is
//! told and what "answers" means is the scenario's ([`ServerSpec`]).

use std::fs;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use super::hub::{sample_pid, ProcSample};

/// Tries at starting a server before giving up.
const TRIES: usize = 5;

/// Which program a [`LocalServer`] runs, and how to tell it started.
#[derive(Debug, Clone, Copy)]
pub struct ServerSpec {
    /// The program's name (in messages, and on PATH when it is not at
    /// [`ServerSpec::path`]).
    pub name: &'static str,
    /// Where Debian installs it (often not on a user's PATH).
    pub path: &'static str,
    /// What to say when it is installed neither there nor on PATH.
    pub install_hint: &'static str,
    /// Its temporary directory is `device-sim-bench-{tag}-…`.
    pub tag: &'static str,
    /// What the readiness check waits for, in messages ("accept
    /// connections", "answer PING").
    pub ready: &'static str,
    /// How long it may take to answer.
    pub start_timeout: Duration,
    /// Its log files in its directory, each removed before a try: the
    /// first is its log, the others (labelled, e.g. what it wrote to
    /// standard error) are added to it in [`LocalServer::log`] when not
    /// empty.
    pub logs: &'static [(&'static str, &'static str)],
}

/// A running server program on 127.0.0.1.
#[derive(Debug)]
pub struct LocalServer {
    spec: ServerSpec,
    port: u16,
    dir: PathBuf,
    /// False while a try runs: a failed try leaves the directory to the
    /// next one.
    owns_dir: bool,
    child: Child,
}

impl LocalServer {
    /// Starts `spec`'s program on a free port, up to [`TRIES`] times, and
    /// waits until `ready` says it answers. `configure` adds the program's
    /// arguments and its standard output and error (files in its
    /// directory, or null; its standard input is null) for a port and the
    /// directory, and returns what else the readiness check and the
    /// scenario need of that try (e.g. a password); `ready` fails or says
    /// no (retried until [`ServerSpec::start_timeout`]) until the server
    /// is up.
    pub fn start<T>(
        spec: ServerSpec,
        mut configure: impl FnMut(&mut Command, u16, &Path) -> anyhow::Result<T>,
        mut ready: impl FnMut(&LocalServer, &T) -> anyhow::Result<bool>,
    ) -> anyhow::Result<(LocalServer, T)> {
        let bin = if Path::new(spec.path).exists() {
            spec.path
        } else {
            // Not where Debian puts it; another system may have it on PATH.
            spec.name
        };
        let dir = std::env::temp_dir().join(format!(
            "device-sim-bench-{}-{}-{}",
            spec.tag,
            std::process::id(),
            fastrand::u64(..)
        ));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut failures = Vec::new();
        for _ in 0..TRIES {
            match LocalServer::launch(spec, bin, &dir, &mut configure, &mut ready) {
                Ok(started) => return Ok(started),
                Err(e) if e.downcast_ref::<NotInstalled>().is_some() => {
                    let _ = fs::remove_dir_all(&dir);
                    return Err(e);
                }
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        let _ = fs::remove_dir_all(&dir);
        bail!(
            "{} did not start in {TRIES} tries:\n{}",
            spec.name,
            failures.join("\n---\n")
        )
    }

    fn launch<T>(
        spec: ServerSpec,
        bin: &str,
        dir: &Path,
        configure: &mut impl FnMut(&mut Command, u16, &Path) -> anyhow::Result<T>,
        ready: &mut impl FnMut(&LocalServer, &T) -> anyhow::Result<bool>,
    ) -> anyhow::Result<(LocalServer, T)> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("binding 127.0.0.1:0 to find a free port")?
            .port();
        for (file, _) in spec.logs {
            let _ = fs::remove_file(dir.join(file));
        }
        let mut command = Command::new(bin);
        let extra = configure(&mut command, port, dir)?;
        let child = match command.stdin(Stdio::null()).spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(anyhow!(NotInstalled(spec.name)).context(format!(
                    "no {} at {} nor on PATH: {}",
                    spec.name, spec.path, spec.install_hint
                )));
            }
            Err(e) => return Err(e).with_context(|| format!("starting {bin}")),
        };
        let mut server = LocalServer {
            spec,
            port,
            dir: dir.to_path_buf(),
            owns_dir: false,
            child,
        };
        let deadline = Instant::now() + spec.start_timeout;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!(
                    "{} on port {port} exited ({status}); its log:\n{}",
                    spec.name,
                    server.log()
                );
            }
            if ready(&server, &extra)? {
                server.owns_dir = true;
                return Ok((server, extra));
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not {} on port {port} within {:?}; its log:\n{}",
                    spec.name,
                    spec.ready,
                    spec.start_timeout,
                    server.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its CPU and memory now.
    pub fn sample(&self) -> anyhow::Result<ProcSample> {
        sample_pid(self.child.id())
            .with_context(|| format!("reading {}'s /proc figures", self.spec.name))
    }

    /// Fails, with its log, if it is no longer running.
    pub fn check(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited ({status}); its log:\n{}",
                self.spec.name,
                self.log()
            ),
            Err(e) => Err(e).with_context(|| format!("checking the {} process", self.spec.name)),
        }
    }

    /// What it logged so far (and wrote to its other log files).
    pub fn log(&self) -> String {
        let mut text = String::new();
        for (i, (file, label)) in self.spec.logs.iter().enumerate() {
            let more = fs::read_to_string(self.dir.join(file)).unwrap_or_default();
            if i == 0 {
                text = more;
            } else if !more.trim().is_empty() {
                text.push_str(&format!("\n({label}) "));
                text.push_str(&more);
            }
        }
        text
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.owns_dir {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Marks the error of a missing server binary (no retry helps).
#[derive(Debug)]
struct NotInstalled(&'static str);

impl std::fmt::Display for NotInstalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} not found", self.0)
    }
}

impl std::error::Error for NotInstalled {}
