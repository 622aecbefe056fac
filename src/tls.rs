//! Native TLS: the certificate and key from `[server.tls]`, a rustls `ServerConfig` built from
//! them (the `ring` provider, chosen explicitly so no process-wide default is needed), and the
//! handshake the accept loop runs before hyper sees a byte.
//!
//! The configuration lives in an [`ArcSwap`] and is read once per accepted connection, so a
//! reload (SIGHUP, or [`Tls::reload`] from a test) changes what new handshakes present without
//! touching a socket that is already open: each connection keeps the `Arc` it started with.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsSettings;

/// Why the certificate or key could not be used; each names the file, so an operator knows
/// which one to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
        setting: &'static str,
    },
    #[error("{} is not a PEM certificate chain: {source}", path.display())]
    Certificate {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {source}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("{} with {} is not a usable TLS identity: {source}", cert.display(), key.display())]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

impl TlsError {
    /// The setting to point at in a start-up refusal.
    pub fn setting(&self) -> &'static str {
        match self {
            TlsError::Read { setting, .. } => setting,
            TlsError::Key { .. } => "server.tls.key",
            TlsError::Certificate { .. } | TlsError::Identity { .. } => "server.tls.cert",
        }
    }
}

/// A TLS handshake that did not produce a connection.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client did not finish (or start) the handshake in time: a slow-loris before HTTP.
    #[error("TLS handshake not finished within {0:?}")]
    TimedOut(Duration),
    /// Not TLS (plain HTTP to the TLS port), an unsupported version, an alert from the client.
    #[error("TLS handshake failed: {0}")]
    Failed(#[from] io::Error),
}

/// The files and the configuration built from them, swapped whole on reload.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    config: ArcSwap<ServerConfig>,
}

impl Tls {
    /// Reads both files when TLS is configured; `None` for plain HTTP.
    pub fn load(settings: &TlsSettings) -> Result<Option<Self>, TlsError> {
        if !settings.is_enabled() {
            return Ok(None);
        }
        let (cert, key) = (PathBuf::from(&settings.cert), PathBuf::from(&settings.key));
        let config = server_config(&cert, &key)?;
        Ok(Some(Self {
            cert,
            key,
            config: ArcSwap::from_pointee(config),
        }))
    }

    /// Reads the certificate and key again. New handshakes use them from now on; connections
    /// already open keep theirs. On failure the previous configuration stays in force (a
    /// half-written file during a renewal must not take the hub off the air).
    pub fn reload(&self) -> Result<(), TlsError> {
        match server_config(&self.cert, &self.key) {
            Ok(config) => {
                self.config.store(Arc::new(config));
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "TLS reload failed; keeping the previous certificate");
                Err(error)
            }
        }
    }

    /// An acceptor for one connection, with the configuration in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.load_full())
    }
}

/// Runs the server side of the handshake on `io`, cut off after `limit`.
pub async fn accept<IO>(
    acceptor: TlsAcceptor,
    io: IO,
    limit: Duration,
) -> Result<TlsStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(limit, acceptor.accept(io)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(HandshakeError::TimedOut(limit)),
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let chain = read_chain(cert)?;
    let private_key = read_key(key)?;
    let identity = |source| TlsError::Identity {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(identity)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(identity)?;
    // hyper serves HTTP/1.1 only; saying so stops a browser from trying h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read(path: &Path, setting: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
        setting,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, "server.tls.cert")?;
    let invalid = |source| TlsError::Certificate {
        path: path.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    if chain.is_empty() {
        return Err(invalid(pem::Error::NoItemsFound));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path, "server.tls.key")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| TlsError::Key {
        path: path.to_owned(),
        source,
    })
}
