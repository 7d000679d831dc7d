//! Browser sessions, in memory: keyed by the SHA-256 digest of the cookie's
//! value (a memory dump does not give the cookie away), each with its role
//! and an absolute expiry on the monotonic clock. At most `max` at once: a
//! new one past that ends the oldest. Pure; time passed in.

use std::collections::HashMap;

use super::Role;

/// One logged-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// What it may do.
    pub role: Role,
    /// Who logged in (`owner`, or the name of the token used to log in).
    pub name: String,
    /// The API token it was opened with, if any: revoking the token ends
    /// the session.
    pub token_id: Option<String>,
    /// Monotonic ms when it was opened.
    pub opened_ms: u64,
    /// Monotonic ms when it ends.
    pub expires_ms: u64,
}

/// Every session.
#[derive(Debug)]
pub struct Sessions {
    by_digest: HashMap<String, Session>,
    max: usize,
    ttl_ms: u64,
}

impl Sessions {
    /// At most `max` sessions, each lasting `ttl_ms`.
    pub fn new(max: usize, ttl_ms: u64) -> Sessions {
        Sessions {
            by_digest: HashMap::new(),
            max: max.max(1),
            ttl_ms,
        }
    }

    /// How long a session lasts, ms.
    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    /// Opens a session under `digest` at `now_ms`; returns how many older
    /// sessions it ended to stay within the bound.
    pub fn open(
        &mut self,
        digest: String,
        role: Role,
        name: String,
        token_id: Option<String>,
        now_ms: u64,
    ) -> usize {
        self.by_digest.retain(|_, s| s.expires_ms > now_ms);
        let mut ended = 0;
        while self.by_digest.len() >= self.max {
            let oldest = self
                .by_digest
                .iter()
                .min_by_key(|(_, s)| s.opened_ms)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => {
                    self.by_digest.remove(&key);
                    ended += 1;
                }
                None => break,
            }
        }
        self.by_digest.insert(
            digest,
            Session {
                role,
                name,
                token_id,
                opened_ms: now_ms,
                expires_ms: now_ms.saturating_add(self.ttl_ms),
            },
        );
        ended
    }

    /// The live session under `digest` (an expired one is removed).
    pub fn get(&mut self, digest: &str, now_ms: u64) -> Option<Session> {
        let session = self.by_digest.get(digest)?;
        if session.expires_ms <= now_ms {
            self.by_digest.remove(digest);
            return None;
        }
        Some(session.clone())
    }

    /// Ends the session under `digest`.
    pub fn end(&mut self, digest: &str) -> Option<Session> {
        self.by_digest.remove(digest)
    }

    /// Ends every session opened with a token for which `exists` is false.
    /// How many ended.
    pub fn end_revoked(&mut self, exists: impl Fn(&str) -> bool) -> usize {
        let before = self.by_digest.len();
        self.by_digest
            .retain(|_, s| s.token_id.as_deref().is_none_or(&exists));
        before - self.by_digest.len()
    }

    /// Sessions open (some may have expired unseen).
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(s: &mut Sessions, key: &str, token: Option<&str>, now: u64) -> usize {
        s.open(
            key.into(),
            Role::Owner,
            "owner".into(),
            token.map(String::from),
            now,
        )
    }

    #[test]
    fn a_session_lives_for_its_ttl_then_is_gone() {
        let mut s = Sessions::new(4, 100);
        open(&mut s, "a", None, 1_000);
        assert_eq!(s.get("a", 1_099).map(|x| x.role), Some(Role::Owner));
        assert_eq!(s.get("a", 1_100), None);
        assert!(s.is_empty());
        assert_eq!(s.get("b", 0), None);
    }

    #[test]
    fn past_the_bound_the_oldest_session_ends() {
        let mut s = Sessions::new(2, 1_000);
        assert_eq!(open(&mut s, "a", None, 1), 0);
        assert_eq!(open(&mut s, "b", None, 2), 0);
        assert_eq!(open(&mut s, "c", None, 3), 1);
        assert_eq!(s.len(), 2);
        assert!(s.get("a", 4).is_none());
        assert!(s.get("b", 4).is_some() && s.get("c", 4).is_some());
        // Expired ones make room before live ones are ended.
        let mut s = Sessions::new(2, 10);
        open(&mut s, "old", None, 0);
        open(&mut s, "mid", None, 5);
        assert_eq!(open(&mut s, "new", None, 12), 0);
        assert!(s.get("mid", 12).is_some());
    }

    #[test]
    fn logout_and_revocation_end_sessions() {
        let mut s = Sessions::new(8, 1_000);
        open(&mut s, "a", None, 0);
        open(&mut s, "b", Some("t1"), 0);
        open(&mut s, "c", Some("t2"), 0);
        assert!(s.end("a").is_some());
        assert!(s.end("a").is_none());
        assert_eq!(s.end_revoked(|id| id == "t2"), 1);
        assert!(s.get("b", 1).is_none());
        assert!(s.get("c", 1).is_some());
    }
}
