//! Where the hub is and how to prove who we are, shared by `publish` and `tail`: `--url`
//! (default: the hub's default listen port on this machine), and a Bearer JWT (`--token`,
//! `EVENTS_HUB_TOKEN`) or an API key (`--api-key`, `EVENTS_HUB_API_KEY`), as SPEC §2 defines;
//! for `https://`, whom to trust (`--ca-file`, see `trust`).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use reqwest::Url;

use super::error::CliError;
use super::trust;

/// The default `--url`: `config/default.toml` listens on 0.0.0.0:8080 (a unit test keeps the
/// two in step).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// The hub's base URL, http:// or https://; a path prefix is kept (e.g.
    /// https://hub.example:8443/api).
    #[arg(long, env = "EVENTS_HUB_URL", default_value = DEFAULT_URL, value_name = "URL")]
    pub url: String,
    /// A JWT, sent as `Authorization: Bearer <token>`.
    #[arg(
        long,
        env = "EVENTS_HUB_TOKEN",
        hide_env_values = true,
        value_name = "JWT",
        conflicts_with = "api_key"
    )]
    pub token: Option<String>,
    /// An API key, sent as `X-Api-Key: <key>`.
    #[arg(
        long,
        env = "EVENTS_HUB_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// PEM certificate(s) of a private CA to trust for https://, besides the usual public roots.
    #[arg(long, env = "EVENTS_HUB_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
}

/// The credential to send with every request.
#[derive(Debug, Clone)]
pub enum Credential {
    Bearer(String),
    ApiKey(String),
    None,
}

impl Credential {
    /// The header (name, value) that carries it, if any.
    pub fn header(&self) -> Option<(&'static str, String)> {
        match self {
            Credential::Bearer(token) => Some(("authorization", format!("Bearer {token}"))),
            Credential::ApiKey(key) => Some(("x-api-key", key.clone())),
            Credential::None => None,
        }
    }
}

/// A parsed `--url`, credential and TLS client configuration.
#[derive(Debug, Clone)]
pub struct Remote {
    base: Url,
    pub credential: Credential,
    /// Used for `https://`/`wss://`; built (and `--ca-file` checked) whatever the scheme, so a
    /// bad file is reported before anything is sent.
    pub tls: Arc<rustls::ClientConfig>,
}

impl RemoteArgs {
    /// Checks the URL and `--ca-file` (usage errors, exit 2, when they cannot be used) and
    /// picks the credential.
    pub fn resolve(&self) -> Result<Remote, CliError> {
        let base = Url::parse(&self.url)
            .map_err(|e| CliError::Usage(format!("--url {:?} is not a URL: {e}", self.url)))?;
        match base.scheme() {
            "http" | "ws" | "https" | "wss" => {}
            other => {
                return Err(CliError::Usage(format!(
                    "--url {:?}: scheme {other:?} is not supported; use http://HOST:PORT or \
                     https://HOST:PORT",
                    self.url
                )));
            }
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(CliError::Usage(format!(
                "--url {:?} names no host",
                self.url
            )));
        }
        let credential = match (&self.token, &self.api_key) {
            (Some(token), _) if !token.is_empty() => Credential::Bearer(token.clone()),
            (_, Some(key)) if !key.is_empty() => Credential::ApiKey(key.clone()),
            _ => Credential::None,
        };
        let tls = trust::client_config(self.ca_file.as_deref())?;
        Ok(Remote {
            base,
            credential,
            tls,
        })
    }
}

impl Remote {
    /// `path` (starting with `/`) under the base URL's own path, with the HTTP scheme
    /// (`https` when the URL is `https` or `wss`).
    pub fn http(&self, path: &str) -> Url {
        let mut url = self.joined(path);
        // Setting a special scheme to another special one cannot fail.
        let scheme = match url.scheme() {
            "ws" => "http",
            "wss" => "https",
            other => other,
        }
        .to_owned();
        let _ = url.set_scheme(&scheme);
        url
    }

    /// `path` under the base URL's own path, with the WebSocket scheme (`wss` for TLS).
    pub fn ws(&self, path: &str) -> Url {
        let mut url = self.joined(path);
        let scheme = match url.scheme() {
            "http" => "ws",
            "https" => "wss",
            other => other,
        }
        .to_owned();
        let _ = url.set_scheme(&scheme);
        url
    }

    fn joined(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let prefix = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{prefix}{path}"));
        url.set_query(None);
        url.set_fragment(None);
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn remote(url: &str) -> Result<Remote, CliError> {
        RemoteArgs {
            url: url.into(),
            token: None,
            api_key: None,
            ca_file: None,
        }
        .resolve()
    }

    #[test]
    fn the_default_url_is_the_default_listen_port() {
        let port = Settings::defaults().server.listen.port();
        assert_eq!(DEFAULT_URL, format!("http://127.0.0.1:{port}"));
    }

    #[test]
    fn paths_are_joined_under_the_prefix_and_schemes_follow_the_protocol() {
        let r = remote("http://hub:9000/api/").expect("valid");
        assert_eq!(
            r.http("/v1/events").as_str(),
            "http://hub:9000/api/v1/events"
        );
        assert_eq!(
            r.ws("/v1/ws/subscribe").as_str(),
            "ws://hub:9000/api/v1/ws/subscribe"
        );
        let r = remote("ws://hub:9000").expect("valid");
        assert_eq!(r.http("/v1/events").as_str(), "http://hub:9000/v1/events");
        let r = remote("https://hub:8443/api").expect("valid");
        assert_eq!(
            r.http("/v1/events").as_str(),
            "https://hub:8443/api/v1/events"
        );
        assert_eq!(
            r.ws("/v1/ws/subscribe").as_str(),
            "wss://hub:8443/api/v1/ws/subscribe"
        );
        let r = remote("wss://hub").expect("valid");
        assert_eq!(r.http("/v1/events").as_str(), "https://hub/v1/events");
    }

    #[test]
    fn unusable_urls_are_usage_errors() {
        for url in ["hub:9000", "ftp://hub", "not a url", "https://"] {
            assert!(
                matches!(remote(url), Err(CliError::Usage(_))),
                "{url} should be refused"
            );
        }
    }
}
