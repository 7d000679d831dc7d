//! Access control against a real hub, as a script or an attacker on the
//! LAN would meet it: a viewer token reads but cannot command (HTTP 403,
//! WebSocket `forbidden`); a token revoked from the command line stops
//! working at the next request and its WebSocket is closed with 4401; a
//! session's requests (writes and reads) from another origin's page are
//! refused; a thousand
//! wrong passwords are slowed down as configured and logged within the
//! log budget. (Every route's 401, 403 for a foreign Host and 415 are
//! provoked by tests/openapi.rs.)

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use sensor_hub::auth::store::CredentialFile;
use sensor_hub::auth::Role;
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// The test hub's credentials file (the hub reloads it when it changes).
fn credentials(hub: &TestHub) -> CredentialFile {
    CredentialFile::new(hub.auth_dir.path().join("credentials.json"))
}

fn new_token(hub: &TestHub, name: &str, role: Role) -> (String, String) {
    let (record, token) = credentials(hub)
        .update(|c| c.add_token(name, role, 0))
        .unwrap();
    (record.id, token)
}

async fn post_command(hub: &TestHub, headers: &[(&str, &str)]) -> RawResponse {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    http_request(
        hub.http,
        "POST",
        "/api/devices/999/commands",
        &all,
        Some(br#"{"kind":"reboot"}"#),
    )
    .await
    .0
}

/// Logs in with a fresh one-time code; returns the `Cookie` header value.
async fn owner_session(hub: &TestHub) -> String {
    let code = credentials(hub)
        .update(|c| c.add_login_code(u64::MAX))
        .unwrap();
    let (answer, _) = http_request(
        hub.http,
        "POST",
        "/api/login",
        &[("Content-Type", "application/json"), ("Authorization", "")],
        Some(format!(r#"{{"code":"{code}"}}"#).as_bytes()),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let cookie = answer.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    cookie.split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn a_viewer_token_reads_but_cannot_command() {
    let hub = start_hub(&[]).await;
    let (_, viewer) = new_token(&hub, "phone", Role::Viewer);
    let bearer = format!("Bearer {viewer}");
    let (answer, _) = http_request(
        hub.http,
        "GET",
        "/api/devices",
        &[("Authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let refused = post_command(&hub, &[("Authorization", &bearer)]).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.text().contains("operator"), "{}", refused.text());
    // The operator token of the test hub gets past access control (the
    // device is unknown: 404).
    assert_eq!(post_command(&hub, &[]).await.status, 404);

    let mut ws = ws_connect(hub.http, Some(&viewer)).await;
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    ws.send(Message::text(
        r#"{"type":"command","id":"c1","device":999,"command":{"kind":"reboot"}}"#,
    ))
    .await
    .unwrap();
    let answer = next_json(&mut ws).await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "forbidden", "{answer}");
    assert_eq!(answer["id"], "c1");
    assert_eq!(
        hub.metric("sensor_hub_http_denied_total{reason=\"forbidden\"}")
            .await,
        1
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_revoked_token_stops_at_once_and_its_websocket_is_closed() {
    let hub = start_hub(&[]).await;
    let (id, token) = new_token(&hub, "script", Role::Operator);
    let bearer = format!("Bearer {token}");
    let mut ws = ws_connect(hub.http, Some(&token)).await;
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    assert_eq!(
        post_command(&hub, &[("Authorization", &bearer)])
            .await
            .status,
        404
    );

    // Revoked by another process (`sensor-hub token revoke` does this).
    credentials(&hub).update(|c| Ok(c.revoke(&id))).unwrap();
    let refused = post_command(&hub, &[("Authorization", &bearer)]).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("the revoked client is closed within 5 s")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let frame = close.expect("a close code");
    assert_eq!(u16::from(frame.code), 4401, "{frame:?}");
    hub.stop().await;
}

#[tokio::test]
async fn a_session_is_refused_from_another_sites_page() {
    let hub = start_hub(&[]).await;
    let cookie = owner_session(&hub).await;
    let own = format!("http://{}", hub.http);
    let session = [("Authorization", ""), ("Cookie", cookie.as_str())];
    let with = |origin: Option<&'static str>| {
        let mut h = session.to_vec();
        if let Some(o) = origin {
            h.push(("Origin", o));
        }
        h
    };
    // No Origin (browsers always send one on POST), or another site's.
    for headers in [
        with(None),
        with(Some("http://evil.example")),
        with(Some("null")),
    ] {
        let refused = post_command(&hub, &headers).await;
        assert_eq!(refused.status, 403, "{headers:?}: {}", refused.text());
    }
    let mut own_page = session.to_vec();
    own_page.push(("Origin", own.as_str()));
    assert_eq!(post_command(&hub, &own_page).await.status, 404);
    // Reads: the hub's own pages send no Origin on a GET; a page of
    // another origin (a credentialed fetch) does, and is refused.
    for (headers, expected) in [
        (with(None), 200),
        (own_page.clone(), 200),
        (with(Some("http://127.0.0.1:1")), 403),
    ] {
        let (answer, _) = http_request(hub.http, "GET", "/api/devices", &headers, None).await;
        assert_eq!(answer.status, expected, "{headers:?}: {}", answer.text());
    }
    // A form or a no-cors fetch cannot send JSON.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let mut headers = own_page.clone();
        headers.push(("Content-Type", content_type));
        let (answer, _) = http_request(
            hub.http,
            "POST",
            "/api/devices/999/commands",
            &headers[..],
            Some(br#"{"kind":"reboot"}"#),
        )
        .await;
        assert_eq!(answer.status, 415, "{content_type}: {}", answer.text());
    }
    // The WebSocket upgrade with the session from another site's page.
    let mut request = ws_request(hub.http, None);
    request
        .headers_mut()
        .insert("cookie", cookie.parse().unwrap());
    request
        .headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
    // Logging out ends the session.
    let mut logout = own_page.clone();
    logout.push(("Content-Type", "application/json"));
    let (answer, _) = http_request(hub.http, "POST", "/api/logout", &logout, Some(b"{}")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(post_command(&hub, &own_page).await.status, 401);
    hub.stop().await;
}

/// Log lines written by the hubs of this test binary.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_wrong_passwords_are_slowed_down_and_logged_within_budget() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();
    const FIRST_WAIT_MS: u64 = 2;
    const MAX_WAIT_MS: u64 = 4;
    let hub = start_hub(&[
        ("SENSOR_HUB__AUTH__FAILURE_DELAY_MS", "2"),
        ("SENSOR_HUB__AUTH__MAX_FAILURE_DELAY_MS", "4"),
        ("SENSOR_HUB__AUTH__FAILURE_LOG_PER_MINUTE", "10"),
    ])
    .await;
    // The owner's password, hashed with cheap argon2 parameters so that a
    // thousand checks take seconds, not minutes; the hub verifies with the
    // parameters stored in the hash.
    let hash = {
        use argon2::password_hash::{PasswordHasher as _, SaltString};
        let params = argon2::Params::new(64, 1, 1, None).unwrap();
        let argon2 =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        argon2
            .hash_password(b"the right password", &salt)
            .unwrap()
            .to_string()
    };
    credentials(&hub)
        .update(|c| {
            c.owner_password = Some(hash);
            Ok(())
        })
        .unwrap();

    const GUESSES: u64 = 1_000;
    let started = Instant::now();
    let (mut checked, mut slowed) = (0u64, 0u64);
    let login = |password: String| async move {
        let body = format!(r#"{{"password":"{password}"}}"#);
        http_request(
            hub.http,
            "POST",
            "/api/login",
            &[("Content-Type", "application/json"), ("Authorization", "")],
            Some(body.as_bytes()),
        )
        .await
        .0
    };
    while checked < GUESSES {
        let answer = login(format!("guess number {checked}")).await;
        match answer.status {
            401 => checked += 1,
            429 => {
                slowed += 1;
                assert!(answer.header("retry-after").is_some());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            other => panic!("a wrong password answered {other}: {}", answer.text()),
        }
    }
    let took = started.elapsed();
    // Each failure made the address wait before the next check: at least
    // the first wait, then the ceiling.
    let least = Duration::from_millis(FIRST_WAIT_MS + (GUESSES - 1) * MAX_WAIT_MS);
    assert!(
        took >= least,
        "{GUESSES} guesses took {took:?}, less than {least:?}"
    );
    assert!(slowed > 0, "no guess was ever told to wait");

    let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    let logged = text
        .lines()
        .filter(|l| l.contains("failed login or wrong token"))
        .count() as u64;
    // Ten a minute; the run may straddle a minute boundary.
    let minutes = took.as_secs() / 60 + 2;
    assert!(
        logged >= 1 && logged <= 10 * minutes,
        "{logged} lines logged"
    );
    // Past the last wait, the test's own token is answered again.
    tokio::time::sleep(Duration::from_millis(MAX_WAIT_MS + 1)).await;
    let left_out = hub
        .metric("sensor_hub_auth_failure_log_lines_left_out_total")
        .await;
    assert_eq!(
        logged + left_out,
        GUESSES,
        "every failure logged or counted"
    );
    assert_eq!(
        hub.metric("sensor_hub_http_denied_total{reason=\"bad_credentials\"}")
            .await,
        GUESSES
    );
    // The right password still works.
    let answer = login("the right password".to_string()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let _ = std::io::stderr().flush();
    hub.stop().await;
}
