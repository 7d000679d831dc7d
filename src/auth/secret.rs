//! Secrets and their stored forms: random values from the operating
//! system, their text form (URL-safe base64), SHA-256 digests of the
//! high-entropy secrets (tokens, session ids, login codes: a fast hash is
//! enough when the secret itself has 256 bits), argon2id for the owner's
//! password (a person's choice, so a slow, salted hash), and comparison in
//! constant time.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Random bytes in a session id, token or login code.
pub const SECRET_BYTES: usize = 32;

/// Shortest password `sensor-hub passwd` accepts, characters.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// Longest password the hub will hash, bytes (argon2 takes any length; a
/// bound keeps a request from making the hub hash megabytes).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why a secret could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `getrandom` failed (no entropy source).
    #[error("the operating system's random source failed ({0}); the hub cannot make secrets")]
    Random(String),
    /// The password could not be hashed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// Too short or too long.
    #[error("a password must have at least {MIN_PASSWORD_CHARS} characters and at most {MAX_PASSWORD_BYTES} bytes")]
    BadPassword,
}

/// `N` random bytes.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(bytes)
}

/// [`SECRET_BYTES`] random bytes as 43 URL-safe characters.
pub fn random_text() -> Result<String, SecretError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<SECRET_BYTES>()?))
}

/// Lower-case hex SHA-256 of `secret`: how tokens, codes and session ids
/// are kept.
pub fn digest(secret: &str) -> String {
    let hash = Sha256::digest(secret.as_bytes());
    let mut text = String::with_capacity(64);
    for byte in hash {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// Whether `a` and `b` are equal, in time that depends only on their
/// lengths.
pub fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The argon2id PHC string of `password` (RustCrypto's defaults: 19 MiB,
/// two passes), with a random salt.
pub fn hash_password(password: &str) -> Result<String, SecretError> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(SecretError::BadPassword);
    }
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| SecretError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| SecretError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `stored` (false for a
/// malformed `stored` or an over-long password). Slow on purpose: run it
/// off the async threads.
pub fn verify_password(password: &str, stored: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let Ok(hash) = PasswordHash::new(stored) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_texts_are_long_url_safe_and_different() {
        let a = random_text().unwrap();
        let b = random_text().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn digest_is_sha256_hex() {
        // FIPS 180-2's "abc" example.
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn same_compares_contents() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }

    #[test]
    fn a_password_round_trips_through_its_hash_and_nothing_else_does() {
        let stored = hash_password("correct horse battery").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(!stored.contains("correct horse"));
        assert!(verify_password("correct horse battery", &stored));
        assert!(!verify_password("correct horse batterY", &stored));
        assert!(!verify_password("correct horse battery", "not a hash"));
        assert!(!verify_password(
            &"x".repeat(MAX_PASSWORD_BYTES + 1),
            &stored
        ));
    }

    #[test]
    fn short_and_huge_passwords_are_refused() {
        assert!(matches!(
            hash_password("short"),
            Err(SecretError::BadPassword)
        ));
        assert!(matches!(
            hash_password(&"y".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(SecretError::BadPassword)
        ));
    }
}
