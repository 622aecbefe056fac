//! Who is calling: a Bearer JWT, an `X-Api-Key`, or (for browsers) an `access_token=<jwt>` or
//! `authorization=Bearer%20<jwt>` query parameter, turned into an [`Identity`]. Credentials
//! are never logged.

use std::collections::BTreeSet;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{ConfigError, Settings, is_hmac};
use crate::error::ApiError;
pub use crate::identity::{Identity, Method};
use crate::identity::{KNOWN_CLAIMS, SUPER_USER};

/// Longest credential looked at; anything longer is refused unread.
const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

/// The claims the hub reads from a token. `exp`, `nbf`, `iss` and `aud` are checked by
/// `jsonwebtoken` on the raw claims (so `aud` may be a string or an array, as RFC 7519 allows).
#[derive(Debug, Deserialize)]
struct VerifiedClaims {
    // Defaulted so a missing `sub` is reported by the required-claims check, by name.
    #[serde(default)]
    sub: String,
    #[serde(default)]
    claims: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// The claims of a token minted by the CLI or the tests.
#[derive(Debug, Serialize)]
pub struct TokenClaims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

struct ApiKey {
    digest: [u8; 32],
    name: String,
    claims: BTreeSet<String>,
}

/// Verifies credentials against the configured key material.
pub struct Authenticator {
    decoding_key: DecodingKey,
    validation: Validation,
    api_keys: Vec<ApiKey>,
    allow_query_token: bool,
}

impl Authenticator {
    /// `jwt_secret` is the resolved secret (a generated one when none was configured).
    pub fn from_settings(settings: &Settings, jwt_secret: &str) -> Result<Self, ConfigError> {
        let auth = &settings.auth;
        let algorithm = auth.jwt_algorithm;
        let decoding_key = if is_hmac(algorithm) {
            if jwt_secret.is_empty() {
                return Err(ConfigError::new("auth.jwt_secret", "must not be empty"));
            }
            DecodingKey::from_secret(jwt_secret.as_bytes())
        } else {
            let key_error = |message: String| {
                ConfigError::new(
                    "auth.jwt_public_key_file",
                    format!("{}: {message}", auth.jwt_public_key_file),
                )
            };
            let pem =
                std::fs::read(&auth.jwt_public_key_file).map_err(|e| key_error(e.to_string()))?;
            let key = match algorithm {
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                _ => DecodingKey::from_rsa_pem(&pem),
            };
            key.map_err(|e| key_error(format!("not a {algorithm:?} public key ({e})")))?
        };

        let mut validation = Validation::new(algorithm);
        validation.leeway = auth.jwt_leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // A configured issuer or audience must be present, not merely right when present.
        let mut required = vec!["exp", "sub"];
        if auth.jwt_issuer.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&[&auth.jwt_issuer]);
            required.push("iss");
        }
        if auth.jwt_audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&auth.jwt_audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);

        let mut api_keys = Vec::with_capacity(auth.api_keys.len());
        for (i, key) in auth.api_keys.iter().enumerate() {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&key.sha256, &mut digest).map_err(|_| {
                ConfigError::new(
                    format!("auth.api_keys[{i}].sha256"),
                    "must be 64 hex digits",
                )
            })?;
            api_keys.push(ApiKey {
                digest,
                name: key.name.clone(),
                claims: key.claims.iter().cloned().collect(),
            });
        }

        Ok(Self {
            decoding_key,
            validation,
            api_keys,
            allow_query_token: auth.allow_query_token,
        })
    }

    /// Authorization header first, then `X-Api-Key`, then the query credential. A credential
    /// that is present but wrong is an error; the hub never falls through to a weaker one.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&QueryCredential>,
    ) -> Result<Identity, ApiError> {
        if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
            let value = value
                .to_str()
                .map_err(|_| unauthorized("the Authorization header is not valid text"))?;
            let token = bearer(value)
                .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
            return self.verify_token(token.trim());
        }
        if let Some(value) = headers.get("x-api-key") {
            return self.verify_api_key(value.as_bytes());
        }
        if let Some(credential) = query {
            return self.verify_query_credential(credential);
        }
        Err(unauthorized(
            "missing credentials: send `Authorization: Bearer <token>` or `X-Api-Key: <key>`",
        ))
    }

    /// `access_token=<jwt>` is the token itself; `authorization=` holds what the header would,
    /// `Bearer <jwt>`. Both obey `auth.allow_query_token`.
    fn verify_query_credential(&self, credential: &QueryCredential) -> Result<Identity, ApiError> {
        if !self.allow_query_token {
            return Err(unauthorized(format!(
                "{} in the URL is disabled on this hub; send an Authorization header",
                credential.name()
            )));
        }
        match credential {
            QueryCredential::AccessToken(token) => self.verify_token(token),
            QueryCredential::Authorization(value) => {
                let token = bearer(value).ok_or_else(|| {
                    unauthorized("the authorization query parameter must be `Bearer <token>`")
                })?;
                self.verify_token(token.trim())
            }
        }
    }

    fn verify_token(&self, token: &str) -> Result<Identity, ApiError> {
        if token.is_empty() {
            return Err(unauthorized("empty bearer token"));
        }
        if token.len() > MAX_CREDENTIAL_BYTES {
            return Err(unauthorized("bearer token too long"));
        }
        let data =
            jsonwebtoken::decode::<VerifiedClaims>(token, &self.decoding_key, &self.validation)
                .map_err(|e| unauthorized(format!("invalid bearer token: {}", describe(&e))))?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(unauthorized("invalid bearer token: empty `sub`"));
        }
        let super_user = claims.roles.iter().any(|r| r == SUPER_USER);
        Ok(Identity::new(
            claims.sub,
            Method::Jwt,
            claims.claims,
            super_user,
        ))
    }

    fn verify_api_key(&self, key: &[u8]) -> Result<Identity, ApiError> {
        if key.is_empty() || key.len() > MAX_CREDENTIAL_BYTES {
            return Err(unauthorized("invalid API key"));
        }
        let digest: [u8; 32] = Sha256::digest(key).into();
        // Compare with every key, in constant time, so timing tells nothing about which matched.
        let mut found = None;
        for candidate in &self.api_keys {
            if bool::from(candidate.digest.ct_eq(&digest)) {
                found = Some(candidate);
            }
        }
        let key = found.ok_or_else(|| unauthorized("invalid API key"))?;
        Ok(Identity::new(
            key.name.clone(),
            Method::ApiKey,
            key.claims.iter().cloned(),
            false,
        ))
    }
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::Unauthorized(message.into())
}

/// A short reason a user can act on, without echoing the token.
fn describe(error: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm => "algorithm not accepted",
        ErrorKind::MissingRequiredClaim(_) => "a required claim (exp, sub, iss, aud) is missing",
        _ => "malformed",
    }
}

fn is_websocket_handshake(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// `Bearer <token>` (the scheme may be written `bearer`) → `<token>`.
fn bearer(value: &str) -> Option<&str> {
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
}

/// A credential carried in the URL, for browsers (which cannot set headers on a WebSocket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryCredential {
    /// `access_token=<jwt>`.
    AccessToken(String),
    /// `authorization=Bearer%20<jwt>`, as the public web console sends it.
    Authorization(String),
}

impl QueryCredential {
    /// The parameter's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            QueryCredential::AccessToken(_) => "access_token",
            QueryCredential::Authorization(_) => "authorization",
        }
    }
}

/// The first `access_token` or `authorization` parameter of a raw query string, decoded. Like a
/// repeated `access_token`, a second credential parameter (of either name) is ignored.
pub fn query_credential(query: Option<&str>) -> Option<QueryCredential> {
    form_pairs(query?).find_map(|(key, value)| match key.as_str() {
        "access_token" => Some(QueryCredential::AccessToken(value)),
        "authorization" => Some(QueryCredential::Authorization(value)),
        _ => None,
    })
}

/// Decoded `key=value` pairs of a query string.
pub fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// Axum extractor: rejects with `401` before the handler (and any upgrade) runs.
impl<S> FromRequestParts<S> for Identity
where
    S: Send + Sync,
    std::sync::Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = std::sync::Arc::<Authenticator>::from_ref(state);
        // The query token exists for browsers, which cannot set headers on a WebSocket; every
        // other request can send a header, and URLs end up in too many logs.
        let query = is_websocket_handshake(&parts.headers)
            .then(|| query_credential(parts.uri.query()))
            .flatten();
        auth.authenticate(&parts.headers, query.as_ref())
    }
}

/// What to put in a token minted by the CLI or the tests.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub subject: String,
    pub claims: Vec<String>,
    pub roles: Vec<String>,
    pub ttl_secs: u64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// Signs a token with the configured HMAC secret or a PEM private key (for the CLI and tests).
pub fn mint_token(
    algorithm: Algorithm,
    key: &EncodingKey,
    spec: &TokenSpec,
) -> Result<String, jsonwebtoken::errors::Error> {
    let body = TokenClaims {
        sub: spec.subject.clone(),
        exp: jsonwebtoken::get_current_timestamp() + spec.ttl_secs,
        claims: spec.claims.clone(),
        roles: spec.roles.clone(),
        iss: spec.issuer.clone(),
        aud: spec.audience.clone(),
    };
    jsonwebtoken::encode(&Header::new(algorithm), &body, key)
}

/// The lower-case hex SHA-256 of an API key, as `[[auth.api_keys]] sha256` wants it.
pub fn api_key_digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Claim names a CLI user may ask for.
pub fn is_known_claim(claim: &str) -> bool {
    KNOWN_CLAIMS.contains(&claim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_decodes_and_finds_the_token() {
        use QueryCredential::{AccessToken, Authorization};
        let found = |query| query_credential(Some(query));
        assert_eq!(
            found("event_types=pdfm&access_token=a%2Eb.c"),
            Some(AccessToken("a.b.c".into()))
        );
        assert_eq!(
            found("event_types=pdfm&authorization=Bearer%20a.b.c"),
            Some(Authorization("Bearer a.b.c".into()))
        );
        assert_eq!(
            found("authorization=Bearer+a.b.c"),
            Some(Authorization("Bearer a.b.c".into())),
            "form encoding: + is a space"
        );
        // The first credential parameter wins, whichever its name, as with two access_tokens.
        assert_eq!(
            found("access_token=x&access_token=y"),
            Some(AccessToken("x".into()))
        );
        assert_eq!(
            found("authorization=Bearer%20x&access_token=y"),
            Some(Authorization("Bearer x".into()))
        );
        assert_eq!(found("event_types=pdfm"), None);
        assert_eq!(query_credential(None), None);
    }

    #[test]
    fn digest_is_lower_hex_sha256() {
        assert_eq!(
            api_key_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
