//! Logging set-up. Logs go to stderr; `RUST_LOG`, when set, wins over `log.level`. The format
//! is `log.format` (`--log-format`): JSON lines for collectors, text for people, and by default
//! text exactly when stderr is a terminal. A socket's lines carry its `session` span's fields
//! (`client_id`, `owner`, `ip`): in text as the `session{…}` prefix, in JSON in `spans`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format.resolve(terminal) {
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
        _ => builder.with_ansi(terminal).try_init(),
    };
}
