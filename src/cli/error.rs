//! The one error type of the client commands (`publish`, `tail`, `check-config`), so each
//! failure maps to its exit code in one place: 2 for what the user wrote (flags, input,
//! configuration), 1 for what happened at run time (network, the hub's refusals).

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
    /// The configuration does not load (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The hub answered with an error; `body` is its error body as sent (exit 1).
    #[error("the hub answered {status}: {body}")]
    Refused { status: u16, body: String },
    /// The hub closed the socket with a code that means "do not reconnect" (exit 1).
    #[error("the hub closed the connection with {code} {reason:?}, which means do not reconnect")]
    Final { code: u16, reason: String },
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
            CliError::Usage(_) | CliError::Input { .. } | CliError::Config(_) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }

    /// A `reqwest` failure, with its causes (reqwest's own message is often just "error
    /// sending request").
    pub fn network(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        CliError::Network(text)
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
