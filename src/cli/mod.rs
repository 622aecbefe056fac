//! The command line: `serve` (the default), helpers to mint a token and hash an API key, and
//! the operator's client commands, which talk to a hub (local or remote) the way any client
//! does: `publish` (HTTP), `tail` (WebSocket) and `check-config` (no hub at all).
//!
//! | file | concern |
//! | --- | --- |
//! | `remote` | `--url`, `--token`/`--api-key`: where the hub is and how to authenticate |
//! | `trust` | `--ca-file` and the roots: the TLS client configuration of `publish` and `tail` |
//! | `error` | [`CliError`]: every failure of a client command, with its exit code |
//! | `publish` | `events-hub publish`: one event, or NDJSON lines from stdin |
//! | `tail` | `events-hub tail`: print a socket's events, reconnect and resume |
//! | `check_config` | `events-hub check-config FILE`: validate and print, secrets masked |

pub mod check_config;
pub mod error;
pub mod publish;
pub mod remote;
pub mod tail;
pub mod trust;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use self::check_config::CheckConfigArgs;
pub use self::error::CliError;
pub use self::publish::PublishArgs;
pub use self::remote::RemoteArgs;
pub use self::tail::TailArgs;

#[derive(Debug, Parser)]
#[command(
    name = "events-hub",
    version,
    about = "A WebSocket hub for infrastructure events"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// `serve`'s flags also work without the word `serve` (it is the default command).
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML); see config/default.toml for every setting.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address, overriding `server.listen` (e.g. 127.0.0.1:8080).
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Log filter, overriding `log.level` (e.g. debug, info, events_hub=debug).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log line format, overriding `log.format`: `json`, `text`, or `auto` (text when stderr is
    /// a terminal, json otherwise).
    #[arg(long, global = true, value_name = "FORMAT", value_parser = ["auto", "json", "text"])]
    pub log_format: Option<String>,
}

impl GlobalArgs {
    /// The flags as setting overrides, the last layer of `Settings::load` (flags win).
    pub fn overrides(&self) -> Vec<(&'static str, String)> {
        let mut overrides = Vec::new();
        if let Some(listen) = &self.listen {
            overrides.push(("server.listen", listen.clone()));
        }
        if let Some(level) = &self.log_level {
            overrides.push(("log.level", level.clone()));
        }
        if let Some(format) = &self.log_format {
            overrides.push(("log.format", format.clone()));
        }
        overrides
    }
}

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Also run the built-in demo source: a few realistic VM and host events per second on
    /// `pdfm` and `orchestrator`, so a first run shows a live stream (same as
    /// `[sources.demo] enabled = true`).
    #[arg(long)]
    pub demo: bool,
}

impl ServeArgs {
    /// `--demo` as a setting override, so it goes through the same validation as the file.
    pub fn overrides(&self) -> Vec<(&'static str, String)> {
        if self.demo {
            vec![("sources.demo.enabled", "true".into())]
        } else {
            Vec::new()
        }
    }

    /// `events-hub --demo serve` and `events-hub serve --demo` mean the same.
    pub fn merge(&self, other: &ServeArgs) -> ServeArgs {
        ServeArgs {
            demo: self.demo || other.demo,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub (the default).
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
    /// Publish events to a hub over HTTP (`POST /v1/events`) and print the receipts.
    #[command(after_help = publish::EXAMPLES)]
    Publish(PublishArgs),
    /// Subscribe to a hub's channels over WebSocket and print their events; reconnects and
    /// resumes without losing or repeating an event.
    #[command(after_help = tail::EXAMPLES)]
    Tail(TailArgs),
    /// Load and validate a configuration file as `serve` would, and print the effective
    /// settings with secrets masked.
    #[command(after_help = check_config::EXAMPLES)]
    CheckConfig(CheckConfigArgs),
    /// Print a signed JWT for the configured key (HS* secret, or --private-key for RS*/ES*).
    #[command(after_help = MINT_TOKEN_EXAMPLES)]
    MintToken(MintTokenArgs),
    /// Print the SHA-256 digest of an API key, for `[[auth.api_keys]] sha256`.
    #[command(after_help = HASH_KEY_EXAMPLES)]
    HashKey(HashKeyArgs),
    /// Test only: echo every WebSocket message on any path, without authentication, through the
    /// hub's own socket handling, for the Autobahn conformance suite. Never expose it.
    #[command(hide = true)]
    ConformanceEcho,
}

#[derive(Debug, Args)]
pub struct MintTokenArgs {
    /// The identity (`sub`) that will own the sockets opened with the token.
    #[arg(long)]
    pub sub: String,
    /// Comma-separated claims: READ_ONLY, EVENTS_PUBLISH, EVENTS_ADMIN.
    #[arg(long, value_delimiter = ',', default_value = "READ_ONLY")]
    pub claims: Vec<String>,
    /// Comma-separated roles (SUPER_USER holds every claim).
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u64,
    /// PEM private key, for RS*/ES* algorithms.
    #[arg(long, value_name = "FILE")]
    pub private_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HashKeyArgs {
    /// The API key; read from standard input when absent (keeps it out of shell history).
    pub key: Option<String>,
    /// Generate a new random key and print it with its digest.
    #[arg(long, conflicts_with = "key")]
    pub generate: bool,
}

const SERVE_EXAMPLES: &str = "\
Examples:
  # A first run with a live stream: the demo source publishes a few events per second.
  events-hub serve --demo
  # Then, in another terminal, with the token the hub printed:
  EVENTS_HUB_TOKEN=$TOKEN events-hub tail pdfm,orchestrator";

const MINT_TOKEN_EXAMPLES: &str = "\
Examples:
  export EVENTS_HUB_TOKEN=$(EVENTS_HUB__AUTH__JWT_SECRET=dev-secret events-hub mint-token --sub alice --claims READ_ONLY,EVENTS_PUBLISH)
  events-hub mint-token --config /etc/events-hub/hub.toml --sub ci --claims EVENTS_PUBLISH --ttl-secs 600";

const HASH_KEY_EXAMPLES: &str = "\
Examples:
  events-hub hash-key --generate
  echo 's3cret-key' | events-hub hash-key";
