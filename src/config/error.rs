//! The one error every setting check returns, so start-up can name the key and exit 2.

/// A setting that cannot be used: start-up stops with this message and exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Refuses 0 for `key`, for values the `config` crate would name wrongly if typed `NonZero*`:
/// inside an array of tables it writes `sources.opennebula[0]reconnect_min_ms`, no dot.
pub fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(key, "must be greater than 0"));
    }
    Ok(())
}

/// Refuses the first of `names` that is not one of `known`, as `unknown {what} "x"; known: …`.
pub fn only_known(
    key: String,
    what: &str,
    names: &[String],
    known: &[&str],
) -> Result<(), ConfigError> {
    match names.iter().find(|n| !known.contains(&n.as_str())) {
        Some(name) => Err(ConfigError::new(
            key,
            format!("unknown {what} {name:?}; known: {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// Deserializes a count, size or period that must be greater than 0 into its `NonZero*` type,
/// with a message that says so; the `config` crate adds the key.
pub fn nonzero<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<std::num::NonZeroU64>,
{
    use serde::Deserialize;
    let value = u64::deserialize(deserializer)?;
    let message = if value == 0 {
        "must be greater than 0"
    } else {
        "is too large"
    };
    std::num::NonZeroU64::new(value)
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| serde::de::Error::custom(message))
}
