//! Which hosts and origins the hub answers, against DNS rebinding and
//! cross-site requests. A request's `Host` must be an IP address (a web
//! page can only reach the hub through an IP address by navigating to it,
//! and then its origin is that address), a loopback name (`localhost`,
//! `*.localhost`), this machine's own name (and `name.local`), or one of
//! `http.allowed_hosts`. A browser's `Origin` must name the same host the
//! request was sent to, or be one of `http.allowed_origins`. Pure.

use std::net::IpAddr;

/// The names and origins the hub accepts besides IP addresses and
/// loopback names.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    hosts: Vec<String>,
    origins: Vec<String>,
}

impl Policy {
    /// Accepts `allowed_hosts` and `own_names` as hosts, and
    /// `allowed_origins` besides same-origin (case-insensitive).
    pub fn new(
        allowed_hosts: &[String],
        allowed_origins: &[String],
        own_names: &[String],
    ) -> Policy {
        let normal = |s: &String| s.trim().trim_end_matches('.').to_ascii_lowercase();
        Policy {
            hosts: allowed_hosts
                .iter()
                .chain(own_names)
                .map(normal)
                .filter(|h| !h.is_empty())
                .collect(),
            origins: allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a request with this `Host` header is answered.
    pub fn host_allowed(&self, host_header: Option<&[u8]>) -> bool {
        let Some(host) = host_header
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(host_name)
        else {
            return false;
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        host.parse::<IpAddr>().is_ok()
            || host == "localhost"
            || host.ends_with(".localhost")
            || self.hosts.contains(&host)
    }

    /// Whether a browser's `Origin` may use the hub, for a request sent to
    /// `host_header`. `null` and anything unparsable are foreign.
    pub fn origin_allowed(&self, origin: &[u8], host_header: Option<&[u8]>) -> bool {
        let Ok(origin) = std::str::from_utf8(origin) else {
            return false;
        };
        let origin = origin.trim().to_ascii_lowercase();
        if self.origins.contains(&origin) {
            return true;
        }
        let Some(host) = host_header else {
            return false;
        };
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        authority.is_some_and(|a| a.as_bytes().eq_ignore_ascii_case(host))
    }
}

/// The host part of a `Host` header (`name`, `name:port`, `1.2.3.4:80`,
/// `[::1]:80`), or `None` when it is malformed.
fn host_name(header: &str) -> Option<&str> {
    let header = header.trim();
    if let Some(rest) = header.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return Some(v6);
    }
    let (name, port) = match header.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (header, None),
    };
    if port.is_some_and(|p| !is_port(p)) || name.is_empty() {
        return None;
    }
    let valid = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    valid.then_some(name)
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new(
            &["pi.local".into()],
            &["https://grafana.example:3000/".into()],
            &["myhost".into(), "myhost.local".into()],
        )
    }

    #[test]
    fn ip_addresses_loopback_and_own_names_are_answered() {
        let p = policy();
        for ok in [
            "127.0.0.1:8080",
            "192.168.1.20",
            "[::1]:8080",
            "[fe80::1]",
            "localhost:8080",
            "LocalHost",
            "app.localhost",
            "pi.local:8080",
            "PI.LOCAL.",
            "myhost",
            "myhost.local:80",
        ] {
            assert!(p.host_allowed(Some(ok.as_bytes())), "{ok}");
        }
    }

    #[test]
    fn other_names_and_malformed_hosts_are_refused() {
        let p = policy();
        for bad in [
            "attacker.example",
            "attacker.example:8080",
            "pi.local.attacker.example",
            "localhost.attacker.example",
            "",
            ":80",
            "[::1",
            "[::1]x",
            "a b",
            "host:port",
            "127.0.0.1:99999999",
        ] {
            assert!(!p.host_allowed(Some(bad.as_bytes())), "{bad}");
        }
        assert!(!p.host_allowed(None));
        assert!(!p.host_allowed(Some(b"\xff")));
    }

    #[test]
    fn same_origin_and_listed_origins_are_allowed() {
        let p = policy();
        let host = Some(&b"127.0.0.1:8080"[..]);
        assert!(p.origin_allowed(b"http://127.0.0.1:8080", host));
        assert!(p.origin_allowed(b"https://127.0.0.1:8080", host));
        assert!(p.origin_allowed(b"HTTP://127.0.0.1:8080", host));
        assert!(p.origin_allowed(b"https://grafana.example:3000", host));
        assert!(!p.origin_allowed(b"http://127.0.0.1:9999", host));
        assert!(!p.origin_allowed(b"http://evil.example", host));
        assert!(!p.origin_allowed(b"null", host));
        assert!(!p.origin_allowed(b"http://127.0.0.1:8080", None));
        assert!(!p.origin_allowed(b"\xff", host));
    }
}
