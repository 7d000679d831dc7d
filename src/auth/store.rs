//! The credentials file: the owner's password (an argon2id hash), the API
//! tokens (name, role, SHA-256 digest) and unused one-time login codes
//! (digest, expiry). Shared by the running hub and the `sensor-hub`
//! command line through [`SecretFile`] (locked, atomic changes; the hub
//! notices a change by the file's [`Stamp`] and reloads it).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::secret_file::Stamp;
use crate::secret_file::{FileError, SecretFile};

use super::secret::{self, SecretError};
use super::Role;

/// The file format's version.
pub const VERSION: u32 = 1;

/// Prefix of every API token, so secret scanners and people recognise one.
pub const TOKEN_PREFIX: &str = "shub_";

/// Most API tokens in one file.
pub const MAX_TOKENS: usize = 256;

/// Most unused login codes kept; making one more drops the oldest.
pub const MAX_LOGIN_CODES: usize = 16;

/// Longest token name, characters.
pub const MAX_TOKEN_NAME: usize = 64;

/// Why the credentials file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be read or written, or is damaged.
    #[error(transparent)]
    File(#[from] FileError),
    /// A random value or hash could not be made.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A name or limit problem the user can fix.
    #[error("{0}")]
    Refused(String),
}

/// One API token, as stored (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id, part of the token's text (`shub_<id>_<secret>`).
    pub id: String,
    /// What the owner called it (e.g. `prometheus`).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 hex of the secret part.
    pub digest: String,
    /// When it was made, Unix ms.
    pub created_ms: u64,
}

/// One unused one-time login code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginCode {
    /// SHA-256 hex of the code.
    pub digest: String,
    /// Unix ms after which it no longer works.
    pub expires_ms: u64,
}

/// The file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// [`VERSION`].
    pub version: u32,
    /// argon2id PHC string of the owner's password, once one is set.
    #[serde(default)]
    pub owner_password: Option<String>,
    /// API tokens.
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
    /// Unused login codes.
    #[serde(default)]
    pub login_codes: Vec<LoginCode>,
}

impl Default for Credentials {
    fn default() -> Credentials {
        Credentials {
            version: VERSION,
            owner_password: None,
            tokens: Vec::new(),
            login_codes: Vec::new(),
        }
    }
}

impl Credentials {
    /// Makes an API token; returns its record and its text, which is shown
    /// once and never stored.
    pub fn add_token(
        &mut self,
        name: &str,
        role: Role,
        now_wall_ms: u64,
    ) -> Result<(TokenRecord, String), StoreError> {
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_TOKEN_NAME
            || name.chars().any(char::is_control)
        {
            return Err(StoreError::Refused(format!(
                "a token name must have 1 to {MAX_TOKEN_NAME} printable characters"
            )));
        }
        if self.tokens.iter().any(|t| t.name == name) {
            return Err(StoreError::Refused(format!(
                "a token named {name:?} exists already; revoke it first or choose another name"
            )));
        }
        if self.tokens.len() >= MAX_TOKENS {
            return Err(StoreError::Refused(format!(
                "there are {MAX_TOKENS} tokens already; revoke unused ones first"
            )));
        }
        let id: String = secret::random_bytes::<4>()?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let secret = secret::random_text()?;
        let record = TokenRecord {
            id: id.clone(),
            name: name.to_string(),
            role,
            digest: secret::digest(&secret),
            created_ms: now_wall_ms,
        };
        self.tokens.push(record.clone());
        Ok((record, format!("{TOKEN_PREFIX}{id}_{secret}")))
    }

    /// Removes the token with this id or name.
    pub fn revoke(&mut self, id_or_name: &str) -> Option<TokenRecord> {
        let at = self
            .tokens
            .iter()
            .position(|t| t.id == id_or_name || t.name == id_or_name)?;
        Some(self.tokens.remove(at))
    }

    /// The token whose text `presented` is, compared in constant time.
    pub fn token(&self, presented: &str) -> Option<&TokenRecord> {
        let (id, secret) = presented.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
        let record = self.tokens.iter().find(|t| t.id == id)?;
        secret::same(&record.digest, &secret::digest(secret)).then_some(record)
    }

    /// The token with this id.
    pub fn token_by_id(&self, id: &str) -> Option<&TokenRecord> {
        self.tokens.iter().find(|t| t.id == id)
    }

    /// Makes a one-time login code valid until `expires_ms`; returns its
    /// text.
    pub fn add_login_code(&mut self, expires_ms: u64) -> Result<String, StoreError> {
        let code = secret::random_text()?;
        if self.login_codes.len() >= MAX_LOGIN_CODES {
            self.login_codes.remove(0);
        }
        self.login_codes.push(LoginCode {
            digest: secret::digest(&code),
            expires_ms,
        });
        Ok(code)
    }

    /// Uses up the login code `code` if it is valid at `now_wall_ms`; also
    /// drops expired codes. Whether it was valid.
    pub fn take_login_code(&mut self, code: &str, now_wall_ms: u64) -> bool {
        self.login_codes.retain(|c| c.expires_ms > now_wall_ms);
        let wanted = secret::digest(code);
        // Every code is compared, so the time does not tell which matched.
        let found = self
            .login_codes
            .iter()
            .map(|c| secret::same(&c.digest, &wanted))
            .fold(None, |found, same| found.or(same.then_some(())));
        if found.is_some() {
            self.login_codes
                .retain(|c| !secret::same(&c.digest, &wanted));
        }
        found.is_some()
    }
}

/// The credentials file at a path.
#[derive(Debug, Clone)]
pub struct CredentialFile {
    file: SecretFile,
}

impl CredentialFile {
    /// The file at `path` (not opened yet).
    pub fn new(path: impl Into<PathBuf>) -> CredentialFile {
        CredentialFile {
            file: SecretFile::new(
                path,
                "credentials file",
                "move it away and run `sensor-hub login-link` to start afresh",
            ),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The file's current stamp, or `None` when it does not exist.
    pub fn stamp(&self) -> Result<Option<Stamp>, StoreError> {
        Ok(self.file.stamp()?)
    }

    fn check(&self, credentials: &Credentials) -> Result<(), FileError> {
        if credentials.version == VERSION {
            Ok(())
        } else {
            Err(self.file.damaged(format!(
                "version {} (this hub reads version {VERSION})",
                credentials.version
            )))
        }
    }

    /// The contents and stamp, or `None` when the file does not exist.
    pub fn load(&self) -> Result<Option<(Credentials, Stamp)>, StoreError> {
        let loaded = self.file.load::<Credentials>()?;
        if let Some((credentials, _)) = &loaded {
            self.check(credentials)?;
        }
        Ok(loaded)
    }

    /// Applies `change` to the contents (empty ones if the file does not
    /// exist) under the lock and writes the result; returns what `change`
    /// returned. Nothing is written when `change` fails.
    pub fn update<R>(
        &self,
        change: impl FnOnce(&mut Credentials) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.file.update(|c| self.check(c), change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn temp_file(name: &str) -> CredentialFile {
        let dir =
            std::env::temp_dir().join(format!("sensor-hub-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        CredentialFile::new(dir.join("credentials.json"))
    }

    #[test]
    fn a_token_is_found_by_its_text_only() {
        let mut c = Credentials::default();
        let (record, text) = c.add_token("grafana", Role::Viewer, 5).unwrap();
        assert!(text.starts_with("shub_"));
        assert!(!serde_json::to_string(&c).unwrap().contains(&text[14..]));
        assert_eq!(c.token(&text), Some(&record));
        let mut wrong = text.clone();
        wrong.pop();
        wrong.push(if text.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(c.token(&wrong), None);
        assert_eq!(c.token("shub_"), None);
        assert_eq!(c.token("Bearer"), None);
        assert_eq!(c.token(&format!("shub_{}_", record.id)), None);
    }

    #[test]
    fn token_names_are_unique_bounded_and_revocable_by_name_or_id() {
        let mut c = Credentials::default();
        let (a, text) = c.add_token("a", Role::Operator, 0).unwrap();
        assert!(c.add_token("a", Role::Viewer, 0).is_err());
        assert!(c.add_token("", Role::Viewer, 0).is_err());
        assert!(c.add_token("bad\nname", Role::Viewer, 0).is_err());
        assert!(c
            .add_token(&"n".repeat(MAX_TOKEN_NAME + 1), Role::Viewer, 0)
            .is_err());
        assert_eq!(c.revoke(&a.id).map(|t| t.name), Some("a".into()));
        assert_eq!(c.token(&text), None);
        c.add_token("b", Role::Viewer, 0).unwrap();
        assert!(c.revoke("b").is_some());
        assert!(c.revoke("b").is_none());
        for i in 0..MAX_TOKENS {
            c.add_token(&format!("t{i}"), Role::Viewer, 0).unwrap();
        }
        assert!(c.add_token("one more", Role::Viewer, 0).is_err());
    }

    #[test]
    fn a_login_code_works_once_and_not_after_it_expires() {
        let mut c = Credentials::default();
        let code = c.add_login_code(1_000).unwrap();
        let late = c.add_login_code(1_000).unwrap();
        assert!(!c.take_login_code("nope", 10));
        assert!(c.take_login_code(&code, 999));
        assert!(!c.take_login_code(&code, 999));
        assert!(!c.take_login_code(&late, 1_000));
        assert!(c.login_codes.is_empty());
        for _ in 0..MAX_LOGIN_CODES + 3 {
            c.add_login_code(5_000).unwrap();
        }
        assert_eq!(c.login_codes.len(), MAX_LOGIN_CODES);
    }

    #[test]
    fn the_file_round_trips_with_mode_0600_and_a_new_stamp_per_change() {
        let file = temp_file("roundtrip");
        assert!(file.load().unwrap().is_none());
        assert!(file.stamp().unwrap().is_none());
        let text = file
            .update(|c| Ok(c.add_token("p", Role::Viewer, 1)?.1))
            .unwrap();
        let (loaded, stamp) = file.load().unwrap().unwrap();
        assert!(loaded.token(&text).is_some());
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        file.update(|c| Ok(c.revoke("p"))).unwrap();
        let (after, stamp2) = file.load().unwrap().unwrap();
        assert!(after.token(&text).is_none());
        assert_ne!(stamp, stamp2);
        // A failed change writes nothing.
        let refused = file.update(|_| -> Result<(), _> { Err(StoreError::Refused("no".into())) });
        assert!(refused.is_err());
        assert_eq!(file.stamp().unwrap(), Some(stamp2));
        let _ = std::fs::remove_dir_all(file.path().parent().unwrap());
    }

    #[test]
    fn a_damaged_file_is_an_error_that_says_what_to_do() {
        let file = temp_file("damaged");
        std::fs::create_dir_all(file.path().parent().unwrap()).unwrap();
        std::fs::write(file.path(), b"{\"version\": 1, \"tokens\": 3").unwrap();
        let e = file.load().unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
        assert!(e.contains("login-link"), "{e}");
        std::fs::write(file.path(), b"{\"version\": 9}").unwrap();
        assert!(file.load().unwrap_err().to_string().contains("version 9"));
        let _ = std::fs::remove_dir_all(file.path().parent().unwrap());
    }
}
