//! Whom `publish` and `tail` trust over `https://`/`wss://`: the Mozilla roots (webpki-roots),
//! plus the certificates of `--ca-file` for a hub whose certificate comes from a private CA.
//! One rustls [`ClientConfig`] on the `ring` provider (the server's), given to both reqwest and
//! tokio-tungstenite, so the binary carries one crypto provider and both commands trust alike.
//!
//! There is deliberately no `--insecure`: `--ca-file` covers the private-CA case, and a switch
//! that turns verification off tends to stay in scripts, sending the token to whoever answers.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

use super::error::CliError;

/// The client configuration: webpki roots and, when given, every certificate in `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, CliError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        for cert in read_ca_file(path)? {
            roots.add(cert).map_err(|e| CliError::CaFile {
                path: path.to_owned(),
                message: format!("holds a certificate that cannot be a trust anchor: {e}"),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::Network(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The `CERTIFICATE` blocks of a PEM file; at least one.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CliError> {
    let error = |message: String| CliError::CaFile {
        path: path.to_owned(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| error(format!("cannot read it: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(error(
            "is not PEM: it holds no -----BEGIN CERTIFICATE----- block".into(),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, contents: &[u8]) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("events-hub-trust-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("write temp file");
        path
    }

    #[test]
    fn a_missing_or_non_pem_ca_file_is_a_usage_error_naming_the_file() {
        let missing = Path::new("/nonexistent/ca.pem");
        let error = client_config(Some(missing)).expect_err("missing");
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
        assert_eq!(error.exit_code(), std::process::ExitCode::from(2));

        let path = temp("not-pem", b"hello, not a certificate\n");
        let error = client_config(Some(&path)).expect_err("not PEM");
        assert!(
            error.to_string().contains(&*path.to_string_lossy())
                && error.to_string().contains("PEM"),
            "{error}"
        );
        let _ = std::fs::remove_file(path);
    }
}
