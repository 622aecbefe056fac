//! `[auth]`: how callers prove who they are (JWT key material, API keys).

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Deserializer};

use super::error::{ConfigError, only_known};
use crate::identity::KNOWN_CLAIMS;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    #[serde(deserialize_with = "algorithm")]
    pub jwt_algorithm: Algorithm,
    pub jwt_secret: String,
    pub jwt_public_key_file: String,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub jwt_leeway_secs: u64,
    pub allow_query_token: bool,
    pub api_keys: Vec<ApiKeySettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    pub name: String,
    pub sha256: String,
    pub claims: Vec<String>,
}

impl AuthSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let algorithm = self.jwt_algorithm;
        if !is_hmac(algorithm) && self.jwt_public_key_file.is_empty() {
            return Err(ConfigError::new(
                "auth.jwt_public_key_file",
                format!("{algorithm:?} needs a PEM public key file"),
            ));
        }
        for (i, key) in self.api_keys.iter().enumerate() {
            key.validate(i)?;
        }
        Ok(())
    }
}

/// The algorithms the verifier has keys for, named case-insensitively (`hs256` works); the
/// rest of `jsonwebtoken::Algorithm` (PS*, EdDSA) is refused with the list of those that work.
fn algorithm<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Algorithm, D::Error> {
    let name = String::deserialize(deserializer)?;
    let algorithm = match name.to_ascii_uppercase().as_str() {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        _ => {
            return Err(serde::de::Error::custom(format!(
                "{name:?} is not supported; use HS256/384/512, RS256/384/512 or ES256/384"
            )));
        }
    };
    Ok(algorithm)
}

/// The one place that decides which algorithms sign with the shared `jwt_secret` (the rest
/// verify with `jwt_public_key_file`), so start-up, `mint-token` and the verifier agree.
pub fn is_hmac(algorithm: Algorithm) -> bool {
    matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    )
}

impl ApiKeySettings {
    /// `i` is the key's index in `auth.api_keys`, for the error's key.
    fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let at = |field: &str| format!("auth.api_keys[{i}].{field}");
        if self.name.trim().is_empty() {
            return Err(ConfigError::new(at("name"), "must not be empty"));
        }
        if self.sha256.len() != 64 || !self.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ConfigError::new(
                at("sha256"),
                "must be 64 hex digits (see `events-hub hash-key`)",
            ));
        }
        only_known(at("claims"), "claim", &self.claims, &KNOWN_CLAIMS)
    }
}
