//! The `sensor-hub` binary: `check-config` verdicts and messages, a real
//! `run` process that stops cleanly on SIGTERM, the account commands
//! (`token`, `passwd`, `login-link`) on a credentials file, and `demo`:
//! simulated devices and a working login link with the `demo` feature, a
//! message saying how to get them without it.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sensor-hub");

fn temp_toml(name: &str, text: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("sensor-hub-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn check_config(file: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(file)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn check_config_accepts_a_good_file() {
    let f = temp_toml("good", "[http]\nbind = \"127.0.0.1:9090\"\n");
    let out = check_config(&f);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:9090"), "{stdout}");
    let _ = std::fs::remove_file(f);
}

#[test]
fn check_config_rejects_an_unknown_key_readably() {
    let f = temp_toml("unknown", "[udp]\nbnd = \"127.0.0.1:1\"\n");
    let out = check_config(&f);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("sensor-hub: error:"), "{stderr}");
    assert!(stderr.contains("bnd"), "{stderr}");
    assert!(stderr.contains("config/default.toml"), "{stderr}");
    let _ = std::fs::remove_file(f);
}

#[test]
fn check_config_rejects_a_bad_value_naming_the_key() {
    let f = temp_toml("badvalue", "[udp]\nbind = \"localhost-ish\"\n");
    let out = check_config(&f);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("udp.bind"), "{stderr}");
    let _ = std::fs::remove_file(f);
}

#[test]
fn check_config_checks_the_mqtt_bridge_without_showing_its_password() {
    let f = temp_toml(
        "mqtt-good",
        "[mqtt]\nenabled = true\nhost = \"broker.lan\"\nusername = \"hub\"\npassword = \"s3cret-pass\"\ncommands = true\n",
    );
    let out = check_config(&f);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("mqtt         = broker.lan:1883 as sensor-hub-sensor_hub, commands on"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret") && !String::from_utf8_lossy(&out.stderr).contains("s3cret"));
    let _ = std::fs::remove_file(f);

    let f = temp_toml(
        "mqtt-bad",
        "[mqtt]\nenabled = true\nusername = \"hub\"\npassword_file = \"/nonexistent/mqtt-password\"\n",
    );
    let out = check_config(&f);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mqtt.password_file /nonexistent/mqtt-password"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(f);

    let f = temp_toml("mqtt-node", "[mqtt]\nnode_id = \"my hub\"\n");
    let out = check_config(&f);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mqtt.node_id"),
        "{out:?}"
    );
    let _ = std::fs::remove_file(f);
}

#[test]
fn check_config_rejects_a_missing_file_naming_it() {
    let out = check_config(std::path::Path::new("/nonexistent/hub.toml"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/hub.toml"), "{stderr}");
}

#[test]
fn environment_overrides_reach_the_binary() {
    let out = Command::new(BIN)
        .arg("check-config")
        .env("SENSOR_HUB__UDP__BIND", "0.0.0.0:47999")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("0.0.0.0:47999"));
}

/// Runs `sensor-hub ARGS` with the setting `key` (an environment
/// override) naming `file`, and `stdin` as its standard input.
fn with_file(
    key: &str,
    file: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> std::process::Output {
    use std::io::Write as _;
    let mut child = Command::new(BIN)
        .args(args)
        .env(key, file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `sensor-hub ARGS` on the credentials file `file`, with `stdin`.
fn account(file: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    with_file("SENSOR_HUB__AUTH__CREDENTIALS_PATH", file, args, stdin)
}

#[test]
fn account_commands_keep_only_hashes_and_say_what_they_did() {
    let file = std::env::temp_dir().join(format!(
        "sensor-hub-cli-{}-credentials.json",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&file);
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    let made = account(
        &file,
        &["token", "create", "--name", "grafana", "--role", "viewer"],
        "",
    );
    assert!(made.status.success(), "{}", text(&made));
    let token = String::from_utf8(made.stdout.clone())
        .unwrap()
        .trim()
        .to_string();
    assert!(token.starts_with("shub_"), "{token}");
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(
        !stored.contains(&token[14..]),
        "the token's secret is stored"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    let owner = account(
        &file,
        &["token", "create", "--name", "x", "--role", "owner"],
        "",
    );
    assert!(!owner.status.success());
    assert!(
        text(&owner).contains("viewer or operator"),
        "{}",
        text(&owner)
    );
    let list = account(&file, &["token", "list"], "");
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("grafana"),
        "{}",
        text(&list)
    );
    let revoked = account(&file, &["token", "revoke", "grafana"], "");
    assert!(revoked.status.success(), "{}", text(&revoked));
    let again = account(&file, &["token", "revoke", "grafana"], "");
    assert!(!again.status.success());
    assert!(text(&again).contains("token list"), "{}", text(&again));

    let short = account(&file, &["passwd"], "short\n");
    assert!(!short.status.success());
    assert!(text(&short).contains("at least 10"), "{}", text(&short));
    let set = account(&file, &["passwd"], "a long enough password\n");
    assert!(set.status.success(), "{}", text(&set));
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(stored.contains("$argon2id$"), "{stored}");
    assert!(!stored.contains("a long enough password"));

    let link = account(&file, &["login-link"], "");
    assert!(link.status.success(), "{}", text(&link));
    let out = String::from_utf8_lossy(&link.stdout);
    let code = out
        .split("/login.html#code=")
        .nth(1)
        .unwrap_or_else(|| panic!("no link: {out}"))
        .trim();
    assert_eq!(code.len(), 43, "{out}");
    assert!(!std::fs::read_to_string(&file).unwrap().contains(code));

    // Served on every address: the same link by this machine's mDNS name too.
    let lan = Command::new(BIN)
        .args(["login-link"])
        .env("SENSOR_HUB__AUTH__CREDENTIALS_PATH", &file)
        .env("SENSOR_HUB__HTTP__BIND", "0.0.0.0:8080")
        .output()
        .unwrap();
    assert!(lan.status.success(), "{}", text(&lan));
    let out = String::from_utf8_lossy(&lan.stdout);
    let links: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("/login.html#code="))
        .collect();
    let host = nix::unistd::gethostname().unwrap();
    let short = host
        .to_string_lossy()
        .split('.')
        .next()
        .unwrap()
        .to_ascii_lowercase();
    assert_eq!(links.len(), 2, "{out}");
    assert!(links[0].starts_with("http://127.0.0.1:8080/"), "{out}");
    assert!(
        links[1].starts_with(&format!("http://{short}.local:8080/")),
        "{out}"
    );
    assert_eq!(
        links[0].split('#').nth(1),
        links[1].split('#').nth(1),
        "one code: {out}"
    );
    let _ = std::fs::remove_file(&file);
}

/// Runs `sensor-hub device ARGS` on the device file `file`, with `stdin`.
fn device_cli(file: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    let args: Vec<&str> = std::iter::once("device")
        .chain(args.iter().copied())
        .collect();
    with_file("SENSOR_HUB__DEVICES__KEYS_PATH", file, &args, stdin)
}

#[test]
fn device_commands_adopt_list_import_and_remove() {
    use std::os::unix::fs::PermissionsExt as _;
    let file = std::env::temp_dir().join(format!(
        "sensor-hub-cli-{}-devices.json",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&file);
    let out = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let added = device_cli(&file, &["add", "--id", "17", "--name", "kitchen"], "");
    assert!(added.status.success(), "{}", out(&added));
    let text = out(&added);
    let key = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("device key:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no key printed: {text}"));
    assert_eq!(key.len(), 64);
    assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(text.contains("device id:        17"), "{text}");
    assert!(text.contains("port 47101"), "{text}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the device file is private");
    let again = device_cli(&file, &["add", "--id", "17"], "");
    assert!(!again.status.success());
    assert!(out(&again).contains("adopted already"), "{}", out(&again));
    let udp_only = device_cli(&file, &["add", "--id", "18", "--no-key"], "");
    assert!(out(&udp_only).contains("no key"), "{}", out(&udp_only));
    let import = device_cli(
        &file,
        &["import", "-"],
        &format!(
            r#"[{{"id": 19, "name": "a", "key": "{}"}}, {{"id": 20, "key": null}}]"#,
            "ab".repeat(32)
        ),
    );
    assert!(import.status.success(), "{}", out(&import));
    let bad = device_cli(&file, &["import", "-"], r#"[{"id": 21, "key": "zz"}]"#);
    assert!(!bad.status.success());
    assert!(out(&bad).contains("64 hex digits"), "{}", out(&bad));
    let list = device_cli(&file, &["list"], "");
    let listed = out(&list);
    for id in ["17", "18", "19", "20"] {
        assert!(
            listed.lines().any(|l| l.trim_start().starts_with(id)),
            "{listed}"
        );
    }
    assert!(!listed.contains(key), "list never shows keys");
    assert!(!listed.contains(&"ab".repeat(32)));
    let removed = device_cli(&file, &["remove", "--id", "17"], "");
    assert!(removed.status.success(), "{}", out(&removed));
    let gone = device_cli(&file, &["remove", "--id", "17"], "");
    assert!(!gone.status.success());
    assert!(out(&gone).contains("not adopted"), "{}", out(&gone));
    let _ = std::fs::remove_file(&file);
}

#[test]
fn run_stops_cleanly_on_sigterm() {
    let db = std::env::temp_dir().join(format!("sensor-hub-cli-{}-run.db", std::process::id()));
    let mut child = Command::new(BIN)
        .arg("run")
        .env("SENSOR_HUB__STORAGE__PATH", &db)
        .env(
            "SENSOR_HUB__AUTH__CREDENTIALS_PATH",
            db.with_extension("credentials.json"),
        )
        .env("SENSOR_HUB__UDP__BIND", "127.0.0.1:0")
        .env("SENSOR_HUB__CONTROL__BIND", "127.0.0.1:0")
        .env("SENSOR_HUB__HTTP__BIND", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("sensor-hub listening"));
    assert!(listening.is_some(), "the hub did not report listening");

    let exit = terminate(&mut child);
    assert!(exit.success(), "{exit:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
    assert!(
        db.exists(),
        "the history database was created on first start"
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// Waits up to 10 s for `child` to exit after SIGTERM.
fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            return exit;
        }
        assert!(
            Instant::now() < deadline,
            "did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(feature = "demo")]
#[test]
fn demo_runs_simulated_devices_and_stops_on_sigterm() {
    let mut child = Command::new(BIN)
        .args(["demo", "--devices", "2", "--interval-ms", "20"])
        .env("SENSOR_HUB__STORAGE__ENABLED", "false")
        .env(
            "SENSOR_HUB__AUTH__CREDENTIALS_PATH",
            std::env::temp_dir().join(format!("sensor-hub-cli-{}-demo.json", std::process::id())),
        )
        .env("SENSOR_HUB__UDP__BIND", "127.0.0.1:0")
        .env("SENSOR_HUB__CONTROL__BIND", "127.0.0.1:0")
        .env("SENSOR_HUB__HTTP__BIND", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let dashboard = stdout
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("Dashboard: http://127.0.0.1:"))
        .expect("the demo prints its dashboard's login link");
    // The link logs a browser in: its code opens a session, and the
    // session reads the API.
    let link = dashboard.trim_start_matches("Dashboard: ");
    let (origin, code) = link
        .split_once("/login.html#code=")
        .unwrap_or_else(|| panic!("not a login link: {link}"));
    let addr = origin.trim_start_matches("http://");
    let body = format!("{{\"code\":\"{code}\"}}");
    let login = raw_http(
        addr,
        &format!(
            "POST /api/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(login.starts_with("HTTP/1.1 200"), "{login}");
    let cookie = login
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {login}"));
    let devices = raw_http(
        addr,
        &format!("GET /api/devices HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"),
    );
    assert!(devices.starts_with("HTTP/1.1 200"), "{devices}");
    // The simulated devices prove their keys and tag their datagrams.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let answer = raw_http(
            addr,
            &format!("GET /api/devices HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"),
        );
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let keyed_and_sending = v["devices"].as_array().is_some_and(|d| {
            d.len() == 2
                && d.iter().all(|d| {
                    d["keyed"] == true
                        && d["connected"] == true
                        && d["datagrams"].as_u64() > Some(1)
                })
        });
        if keyed_and_sending {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "two keyed devices sending: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let keys_file =
        std::env::temp_dir().join(format!("sensor-hub-demo-devices-{}.json", child.id()));
    assert!(keys_file.exists(), "the demo's own device file");

    let exit = terminate(&mut child);
    assert!(exit.success(), "{exit:?}");
    assert!(
        !keys_file.exists(),
        "the demo removes its keys when it ends"
    );
    let stderr: Vec<String> = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .collect();
    let stopped = stderr
        .iter()
        .find(|l| l.contains("simulated fleet stopped"))
        .unwrap_or_else(|| panic!("no fleet report: {stderr:?}"));
    let datagrams: u64 = stopped
        .split_once("datagrams=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no datagram count: {stopped}"));
    assert!(datagrams >= 2, "{stopped}");
}

#[cfg(not(feature = "demo"))]
#[test]
fn demo_without_the_feature_says_how_to_get_it() {
    let out = Command::new(BIN)
        .arg("demo")
        .env("SENSOR_HUB__STORAGE__ENABLED", "false")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("sensor-hub: error:"), "{stderr}");
    assert!(stderr.contains("without the `demo` feature"), "{stderr}");
    assert!(stderr.contains("--features demo"), "{stderr}");

    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success(), "{help:?}");
    let help = String::from_utf8_lossy(&help.stdout);
    let demo = help
        .lines()
        .find(|l| l.trim_start().starts_with("demo "))
        .unwrap_or_else(|| panic!("no demo in --help: {help}"));
    assert!(demo.contains("Not in this build"), "{demo}");
}

/// Sends `request` to `addr` and returns the whole answer.
#[cfg(feature = "demo")]
fn raw_http(addr: &str, request: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}
