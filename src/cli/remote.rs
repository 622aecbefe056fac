//! Where the hub is and how to prove who we are, shared by `publish` and `tail`: `--url`
//! (default: the hub's default listen port on this machine), and a Bearer JWT (`--token`,
//! `EVENTS_HUB_TOKEN`) or an API key (`--api-key`, `EVENTS_HUB_API_KEY`), as SPEC §2 defines.

use clap::Args;
use reqwest::Url;

use super::error::CliError;

/// The default `--url`: `config/default.toml` listens on 0.0.0.0:8080 (a unit test keeps the
/// two in step).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// The hub's base URL; a path prefix is kept (e.g. http://hub.example:8080/api).
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

/// A parsed `--url` and credential.
#[derive(Debug, Clone)]
pub struct Remote {
    base: Url,
    pub credential: Credential,
}

impl RemoteArgs {
    /// Checks the URL (usage error, exit 2, when it cannot be used) and picks the credential.
    pub fn resolve(&self) -> Result<Remote, CliError> {
        let base = Url::parse(&self.url)
            .map_err(|e| CliError::Usage(format!("--url {:?} is not a URL: {e}", self.url)))?;
        match base.scheme() {
            "http" | "ws" => {}
            "https" | "wss" => {
                return Err(CliError::Usage(format!(
                    "--url {:?}: this build of events-hub has no TLS client support yet; use \
                     http:// (e.g. through an SSH tunnel or on the hub's host)",
                    self.url
                )));
            }
            other => {
                return Err(CliError::Usage(format!(
                    "--url {:?}: scheme {other:?} is not supported; use http://HOST:PORT",
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
        Ok(Remote { base, credential })
    }
}

impl Remote {
    /// `path` (starting with `/`) under the base URL's own path, with the HTTP scheme.
    pub fn http(&self, path: &str) -> Url {
        let mut url = self.joined(path);
        // `ws` → `http`; setting a special scheme to another special one cannot fail.
        if url.scheme() == "ws" {
            let _ = url.set_scheme("http");
        }
        url
    }

    /// `path` under the base URL's own path, with the WebSocket scheme.
    pub fn ws(&self, path: &str) -> Url {
        let mut url = self.joined(path);
        if url.scheme() == "http" {
            let _ = url.set_scheme("ws");
        }
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
    }

    #[test]
    fn unusable_urls_are_usage_errors() {
        for url in ["hub:9000", "https://hub", "ftp://hub", "not a url"] {
            assert!(
                matches!(remote(url), Err(CliError::Usage(_))),
                "{url} should be refused"
            );
        }
    }
}
