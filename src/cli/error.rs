//! The one error type of the client commands (`publish`, `tail`, `check-config`), so each
//! failure maps to its exit code in one place: 2 for what the user wrote (flags, input,
//! configuration), 1 for what happened at run time (network, the hub's refusals).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag or argument that cannot be used (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A line of input (NDJSON, a `--body`) that is not what the command needs (exit 2).
    #[error("{what}: {message}")]
    Input { what: String, message: String },
    /// `--ca-file` cannot be read or holds no usable PEM certificate (exit 2).
    #[error("--ca-file {}: {message}", path.display())]
    CaFile { path: PathBuf, message: String },
    /// The configuration does not load (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The hub answered with an error; `body` is its error body as sent (exit 1).
    #[error("the hub answered {status}: {body}")]
    Refused { status: u16, body: String },
    /// The hub closed the socket with a code that means "do not reconnect" (exit 1).
    #[error("the hub closed the connection with {code} {reason:?}, which means do not reconnect")]
    Final { code: u16, reason: String },
    /// The hub's TLS certificate does not verify against the trusted roots (exit 1); not
    /// retried, since trying again cannot change it.
    #[error(
        "the hub's TLS certificate is not trusted ({detail}); if the hub uses a private CA, \
         pass its certificate with --ca-file PEM (or EVENTS_HUB_CA_FILE)"
    )]
    Untrusted { detail: String },
    /// The hub could not be reached, or the exchange broke off (exit 1).
    #[error("cannot reach the hub: {0}")]
    Network(String),
    /// Reading standard input or writing standard output failed (exit 1).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_)
            | CliError::Input { .. }
            | CliError::CaFile { .. }
            | CliError::Config(_) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }

    /// A `reqwest` failure, with its causes (reqwest's own message is often just "error
    /// sending request"); [`CliError::Untrusted`] when the cause is the hub's certificate.
    pub fn network(error: &(dyn std::error::Error + 'static)) -> Self {
        if let Some(untrusted) = Self::untrusted(error) {
            return untrusted;
        }
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        CliError::Network(text)
    }

    /// [`CliError::Untrusted`] when a connection failed on the hub's certificate: rustls's
    /// `InvalidCertificate` somewhere in the chain of causes. An `io::Error` is looked into
    /// (tokio-rustls wraps rustls's error in one, hyper-rustls that in another), since
    /// `io::Error::source` skips the error it wraps.
    pub fn untrusted(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(tls @ rustls::Error::InvalidCertificate(_)) =
                error.downcast_ref::<rustls::Error>()
            {
                return Some(CliError::Untrusted {
                    detail: tls.to_string(),
                });
            }
            next = match error.downcast_ref::<std::io::Error>() {
                Some(io) => io
                    .get_ref()
                    .map(|inner| inner as &(dyn std::error::Error + 'static)),
                None => error.source(),
            };
        }
        None
    }
}

/// Prints the error as `events-hub: …` on stderr and returns its exit code.
pub fn report(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("events-hub: {error}");
            error.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rustls_certificate_error_inside_an_io_error_is_untrusted() {
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let io = std::io::Error::other(tls);
        let error = CliError::untrusted(&io).expect("a certificate problem");
        assert!(
            error.to_string().contains("not trusted") && error.to_string().contains("--ca-file"),
            "{error}"
        );
        let other = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(CliError::untrusted(&other).is_none());
    }
}
