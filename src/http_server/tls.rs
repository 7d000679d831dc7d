//! HTTPS for the listener: the PEM certificate chain and private key named
//! by `http.tls_cert_path` and `http.tls_key_path`, read once at start
//! into a rustls server configuration (the `ring` crypto provider, HTTP/1.1
//! by ALPN, since `/ws` upgrades need HTTP/1.1). Errors name the file, the
//! key and what to do; SECURITY.md shows how to make a self-signed pair.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error(
        "cannot read {path} ({key}): {source}; check the path, and that the hub's user may read it"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Its configuration key.
        key: &'static str,
        /// What the system said.
        source: io::Error,
    },
    /// A file is not PEM, or its PEM is damaged.
    #[error("{path} ({key}) is not a readable PEM file: {message}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// Its configuration key.
        key: &'static str,
        /// What the parser said.
        message: String,
    },
    /// The certificate file holds no certificate.
    #[error("{0} (http.tls_cert_path) holds no PEM certificate (a -----BEGIN CERTIFICATE----- block); SECURITY.md shows how to make one")]
    NoCertificate(PathBuf),
    /// The key file holds no private key.
    #[error("{0} (http.tls_key_path) holds no PEM private key (PKCS#8, PKCS#1 or SEC1); SECURITY.md shows how to make one")]
    NoKey(PathBuf),
    /// rustls refused the pair.
    #[error("the TLS certificate and key were refused: {0}; check that http.tls_key_path is the key of http.tls_cert_path")]
    Rejected(#[from] rustls::Error),
}

fn read(path: &Path, key: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        key,
        source,
    })
}

/// The server configuration for a certificate chain and key in PEM.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let cert_pem = read(cert_path, "http.tls_cert_path")?;
    let key_pem = read(key_path, "http.tls_key_path")?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: cert_path.to_path_buf(),
            key: "http.tls_cert_path",
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.to_path_buf()));
    }
    let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(key) => key,
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey(key_path.to_path_buf()))
        }
        Err(e) => {
            return Err(TlsError::BadPem {
                path: key_path.to_path_buf(),
                key: "http.tls_key_path",
                message: e.to_string(),
            })
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// An acceptor for [`server_config`].
pub fn acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(Arc::new(server_config(
        cert_path, key_path,
    )?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("sensor-hub-tls-test-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_missing_file_names_its_key() {
        let err = server_config(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
        assert!(err.contains("http.tls_cert_path"), "{err}");
    }

    #[test]
    fn a_file_without_a_certificate_or_key_says_so() {
        let cert = temp("empty-cert.pem", "not a certificate\n");
        let key = temp("empty-key.pem", "not a key\n");
        let err = server_config(&cert, &key).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate(_)), "{err}");
        let generated = rcgen::generate_simple_self_signed(vec!["pi.local".into()]).unwrap();
        let cert_ok = temp("cert.pem", &generated.cert.pem());
        let err = server_config(&cert_ok, &key).unwrap_err();
        assert!(matches!(err, TlsError::NoKey(_)), "{err}");
        let key_ok = temp("key.pem", &generated.key_pair.serialize_pem());
        let config = server_config(&cert_ok, &key_ok).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        for p in [cert, key, cert_ok, key_ok] {
            let _ = std::fs::remove_file(p);
        }
    }
}
