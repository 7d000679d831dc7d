//! The account subcommands, run on the hub's machine (whoever can write
//! the credentials file is the owner): `passwd`, `login-link` and
//! `token create|list|revoke`. They change the credentials file under its
//! lock; a running hub notices within a second.

use std::io::{BufRead as _, IsTerminal as _};

use anyhow::Context as _;
use clap::Subcommand;
use sensor_hub::auth::secret::{hash_password, MIN_PASSWORD_CHARS};
use sensor_hub::auth::store::CredentialFile;
use sensor_hub::auth::{login_url, Role};
use sensor_hub::clock::Clock;
use sensor_hub::config::HubConfig;

/// `sensor-hub token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make an API token and print it (once: only its hash is kept).
    Create {
        /// What it is for, e.g. `prometheus` (unique).
        #[arg(long)]
        name: String,
        /// `viewer` (reads, /metrics, /ws without commands) or `operator`
        /// (commands too).
        #[arg(long, default_value = "viewer", value_parser = parse_role)]
        role: Role,
    },
    /// List the tokens (id, name, role, creation time; never the secret).
    List,
    /// Revoke a token by id or name; it stops working at once.
    Revoke {
        /// The token's id or name.
        token: String,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a role: use viewer or operator"))
}

fn file(config: &HubConfig) -> CredentialFile {
    CredentialFile::new(&config.auth.credentials_path)
}

/// `sensor-hub passwd`: sets the owner's password, read without echo on a
/// terminal, or as one line from standard input otherwise.
pub fn passwd(config: &HubConfig) -> anyhow::Result<()> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New owner password: ")?;
        let again = rpassword::prompt_password("Again: ")?;
        anyhow::ensure!(
            first == again,
            "the two passwords differ; nothing was changed"
        );
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    anyhow::ensure!(
        password.chars().count() >= MIN_PASSWORD_CHARS,
        "the password must have at least {MIN_PASSWORD_CHARS} characters; nothing was changed"
    );
    let hash = hash_password(&password)?;
    file(config).update(|c| {
        c.owner_password = Some(hash);
        Ok(())
    })?;
    println!(
        "The owner's password is set (in {}). Log in at http://{}/login.html",
        config.auth.credentials_path.display(),
        config.http.bind
    );
    Ok(())
}

/// Makes a one-time login code and returns its URL for a hub whose HTTP
/// listener is at `http` (`http.bind` unless it was bound to port 0).
pub fn new_login_url(config: &HubConfig, http: std::net::SocketAddr) -> anyhow::Result<String> {
    let expires = Clock::system()
        .now()
        .wall_ms
        .saturating_add(config.auth.login_link_ttl_ms);
    let code = file(config)
        .update(|c| c.add_login_code(expires))
        .context("making a login link")?;
    Ok(login_url(http, config.http.tls_paths().is_some(), &code))
}

/// `sensor-hub login-link`.
pub fn login_link(config: &HubConfig) -> anyhow::Result<()> {
    let url = new_login_url(config, config.http.bind)?;
    println!(
        "Open this link within {} minutes to log in as the owner (it works once):",
        config.auth.login_link_ttl_ms / 60_000
    );
    println!("  {url}");
    // Served on every address (a Pi reached over SSH): the same one-time
    // link by this machine's name, which the Host check accepts.
    if config.http.bind.ip().is_unspecified() {
        if let Some(name) = nix::unistd::gethostname()
            .ok()
            .and_then(|n| n.into_string().ok())
            .filter(|n| !n.is_empty() && n != "localhost")
        {
            let name = name.split('.').next().unwrap_or(&name).to_ascii_lowercase();
            let lan = url.replacen("127.0.0.1", &format!("{name}.local"), 1);
            println!("or, from another machine on your network (mDNS name):");
            println!("  {lan}");
        }
    }
    Ok(())
}

/// `sensor-hub token …`.
pub fn token(config: &HubConfig, command: TokenCommand) -> anyhow::Result<()> {
    let file = file(config);
    match command {
        TokenCommand::Create { name, role } => {
            anyhow::ensure!(
                role != Role::Owner,
                "a token's role is viewer or operator; the owner logs in with the password or a login link"
            );
            let now = Clock::system().now().wall_ms;
            let (record, text) = file.update(|c| c.add_token(&name, role, now))?;
            println!("{text}");
            eprintln!(
                "Token {} ({}, role {}) made. It is shown only now: store it where it is used \
                 (e.g. Authorization: Bearer <token>).",
                record.id,
                record.name,
                record.role.name()
            );
        }
        TokenCommand::List => {
            let credentials = file.load()?.map(|(c, _)| c).unwrap_or_default();
            if credentials.tokens.is_empty() {
                println!(
                    "no tokens; make one with: sensor-hub token create --name NAME --role viewer"
                );
            }
            for t in &credentials.tokens {
                println!(
                    "{}  {:<8}  created {} ms  {}",
                    t.id,
                    t.role.name(),
                    t.created_ms,
                    t.name
                );
            }
        }
        TokenCommand::Revoke { token } => {
            let revoked = file.update(|c| Ok(c.revoke(&token)))?;
            match revoked {
                Some(t) => println!("revoked {} ({})", t.id, t.name),
                None => anyhow::bail!(
                    "no token with id or name {token:?}; `sensor-hub token list` shows them"
                ),
            }
        }
    }
    Ok(())
}
