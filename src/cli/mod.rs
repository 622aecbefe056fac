//! The command line: `serve` (the default), and helpers to mint a token and hash an API key.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "events-hub",
    version,
    about = "A WebSocket hub for infrastructure events"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub (the default).
    Serve,
    /// Print a signed JWT for the configured key (HS* secret, or --private-key for RS*/ES*).
    MintToken(MintTokenArgs),
    /// Print the SHA-256 digest of an API key, for `[[auth.api_keys]] sha256`.
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
    /// Comma-separated claims: READ_ONLY, EVENTS_PUBLISH.
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
