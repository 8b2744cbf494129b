//! TLS for both ends: the server's certificate and key (`serve --tls-cert/--tls-key`), and the
//! roots an HTTPS client trusts (`--ca-cert` on `export --server`, `bench` and the credential
//! commands' `--server` form).
//!
//! Owns: reading PEM files into rustls and reqwest types, the crypto provider (ring: it builds
//! from source quickly and needs no system library). Must not touch: sockets or HTTP handling
//! (`server` drives the handshake; callers build their own clients from [`ClientTls`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate, key or CA file could not be used (exit code 2 at start-up).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no PEM item of the expected kind, or a malformed one.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// rustls refused the certificate chain and key (e.g. the key is not the certificate's).
    #[error("{cert} with {key}: {source}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Every certificate in a PEM file, in order; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error(
            path,
            "no certificate found (expected PEM \"-----BEGIN CERTIFICATE-----\")",
        ));
    }
    Ok(certs)
}

/// The rustls crypto provider used everywhere in this crate.
#[must_use]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs [`provider`] as the process default, which reqwest's rustls backend requires (it is
/// built without a provider of its own, to avoid compiling a second one). Idempotent; call it
/// before building any `reqwest` client.
pub fn install_default_provider() {
    // An error only means a default is installed already (by an earlier call).
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A server TLS configuration from a PEM certificate chain (leaf first) and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1). Speaks HTTP/1.1 only, like the plain listener.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = read_certs(cert)?;
    let key_pem = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        pem_error(
            key,
            format!("no private key found ({e}); expected PEM \"-----BEGIN PRIVATE KEY-----\""),
        )
    })?;
    let config_error = |source| TlsError::Config {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What an HTTPS client trusts. `http://` URLs ignore it.
#[derive(Debug, Clone, Default)]
pub enum ClientTls {
    /// The system's roots.
    #[default]
    SystemRoots,
    /// Only these CA certificates (`--ca-cert`): a self-signed or private CA, and nothing else.
    Only(Vec<reqwest::Certificate>),
}

impl ClientTls {
    /// Trust only the CA certificates in a PEM file; `None` keeps the system's roots.
    pub fn from_ca_file(path: Option<&Path>) -> Result<Self, TlsError> {
        let Some(path) = path else {
            return Ok(Self::SystemRoots);
        };
        // Parsed by rustls first, for an error that names the file and the problem.
        let certs = read_certs(path)?
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(path, e.to_string()))?;
        Ok(Self::Only(certs))
    }

    /// An async client builder with these roots.
    pub fn client(&self) -> reqwest::ClientBuilder {
        install_default_provider();
        let builder = reqwest::Client::builder();
        match self {
            Self::SystemRoots => builder,
            Self::Only(certs) => builder.tls_certs_only(certs.iter().cloned()),
        }
    }

    /// A blocking client builder with these roots.
    pub fn blocking_client(&self) -> reqwest::blocking::ClientBuilder {
        install_default_provider();
        let builder = reqwest::blocking::Client::builder();
        match self {
            Self::SystemRoots => builder,
            Self::Only(certs) => builder.tls_certs_only(certs.iter().cloned()),
        }
    }
}
