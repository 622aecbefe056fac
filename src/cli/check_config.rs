//! `events-hub check-config FILE`: the file goes through `Settings::load` exactly as `serve`
//! loads it (built-in defaults < FILE < environment < flags, then every check), and the
//! effective settings are printed as JSON, with secrets replaced by `"***"`.
//!
//! Masked: every string value whose key names a secret (`jwt_secret`, and any `*secret*`,
//! `*password*`, `*token*` or `*_pem` key a later section may add) and the API keys' `sha256`
//! digests (a digest of a short key can be brute-forced). An empty secret is shown as `""`:
//! that it is unset is worth seeing (the hub then generates one). Paths to key files are shown.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use serde_json::Value;

use super::GlobalArgs;
use super::error::CliError;
use crate::config::Settings;

pub const EXAMPLES: &str = "\
Examples:
  events-hub check-config /etc/events-hub/hub.toml
  EVENTS_HUB__AUTH__JWT_SECRET=… events-hub check-config hub.toml | jq .server

Prints the effective settings (defaults, the file, EVENTS_HUB__* variables and flags merged)
as JSON with secrets shown as \"***\". Exit codes: 0 valid, 2 invalid (the message names the
setting).";

/// What replaces a secret.
pub const MASK: &str = "***";

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The configuration file (TOML) to check.
    pub file: PathBuf,
}

pub fn run(global: &GlobalArgs, args: &CheckConfigArgs) -> Result<(), CliError> {
    if global.config.as_ref().is_some_and(|c| *c != args.file) {
        return Err(CliError::Usage(
            "check-config takes the file as its argument; drop --config".into(),
        ));
    }
    let (_, mut values) = Settings::load_merged(Some(&args.file), true, &global.overrides())?;
    mask(&mut values);
    let text = serde_json::to_string_pretty(&values)
        .map_err(|e| CliError::Io(std::io::Error::other(e)))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    eprintln!("events-hub: {} is valid", args.file.display());
    Ok(())
}

/// Replaces secret values, at any depth, with [`MASK`].
pub fn mask(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    Value::String(text) if is_secret(key) && !text.is_empty() => {
                        *text = MASK.to_owned();
                    }
                    other => mask(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}

fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "sha256"
        || key.ends_with("_pem")
        || ["secret", "password", "token"]
            .iter()
            .any(|word| key.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_at_any_depth_and_the_rest_is_kept() {
        let mut v = json!({
            "auth": {"jwt_secret": "s3cret", "jwt_public_key_file": "/k.pem",
                     "allow_query_token": true, "jwt_issuer": "",
                     "api_keys": [{"name": "ci", "sha256": "ab", "claims": ["READ_ONLY"]}]},
            "other": {"db_password": "p", "empty_secret": ""}
        });
        mask(&mut v);
        assert_eq!(v["auth"]["jwt_secret"], MASK);
        assert_eq!(v["auth"]["api_keys"][0]["sha256"], MASK);
        assert_eq!(v["auth"]["api_keys"][0]["name"], "ci");
        assert_eq!(v["auth"]["jwt_public_key_file"], "/k.pem");
        assert_eq!(v["auth"]["allow_query_token"], true);
        assert_eq!(v["other"]["db_password"], MASK);
        assert_eq!(v["other"]["empty_secret"], "");
    }
}
