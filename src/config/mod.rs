//! Typed configuration: an optional TOML file plus `PGCH__<SECTION>__<KEY>` environment
//! overrides, so pgch runs in a container from the environment alone.
//!
//! Unknown keys are rejected (a typo must not silently fall back to a default), and
//! [`Config::validate`] names the key and the rule it broke. Passwords are held in
//! [`Secret`], whose `Debug` and `Display` never show the value.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

mod endpoint;
mod file;
mod settings;
mod url;
mod validate;

pub use self::endpoint::PgEndpoint;
pub use self::file::*;
pub use self::settings::*;
pub use self::url::redact_url;

/// Default replication slot name.
pub const DEFAULT_SLOT: &str = "pgch";
/// Default destination database in ClickHouse.
pub const DEFAULT_DESTINATION_DATABASE: &str = "pgch";
/// Default ClickHouse user, as on a fresh server.
pub const DEFAULT_DESTINATION_USER: &str = "default";
/// Postgres' own default port.
pub const DEFAULT_PG_PORT: u16 = 5432;
/// Default connect timeout for both servers.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
/// Prefix of environment overrides: `PGCH__SOURCE__URL` sets `source.url`.
pub const ENV_PREFIX: &str = "PGCH";

/// Errors from loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be read or did not match the schema.
    #[error("configuration could not be loaded: {0}")]
    Load(String),
    /// A value broke a rule: the key and the rule are named so the user can fix it.
    #[error("configuration key `{key}`: {rule}")]
    Invalid { key: &'static str, rule: String },
}

fn invalid(key: &'static str, rule: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        rule: rule.into(),
    }
}

/// A password or other secret: never printed, not even by `{:?}`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for the one place that must send it to a server.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no secret was given (so none is sent).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// How the connection to Postgres uses TLS, with libpq's meaning of each mode.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, unverified; plain TCP otherwise.
    #[default]
    Prefer,
    /// TLS required; the certificate is verified only when a root certificate is given.
    Require,
    /// TLS required; the chain must lead to the root certificate (any host name).
    VerifyCa,
    /// TLS required; the chain and the host name are verified.
    VerifyFull,
}

/// What the pipeline does; `pgch check` judges the source for this mode.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Copy the tables, then stream changes from the slot (the default).
    #[default]
    SnapshotAndCdc,
    /// Copy the tables once; no slot, no replication connection (a pooler port is fine).
    SnapshotOnly,
    /// Stream changes only, from the slot's start.
    CdcOnly,
}

/// What a ClickHouse table holds of its source table (`[[tables]] mode`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TableMode {
    /// The rows as Postgres holds them now (a `ReplacingMergeTree` of row versions).
    #[default]
    Current,
    /// Every change a row of its own, append-only, for audit and time travel.
    History,
}

/// What a TRUNCATE in the stream does to the ClickHouse table.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TruncateMode {
    /// Empty the ClickHouse table too (the default: it mirrors Postgres).
    #[default]
    Apply,
    /// Keep the rows in ClickHouse (an archive that outlives Postgres' retention).
    Ignore,
}

impl Mode {
    /// Whether this mode needs a replication connection and a slot.
    pub fn streams(self) -> bool {
        !matches!(self, Mode::SnapshotOnly)
    }
}

impl Config {
    /// Loads the optional file, then applies `PGCH__SECTION__KEY` environment overrides.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "the config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(
                config::File::from(path.to_path_buf()).format(config::FileFormat::Toml),
            );
        }
        let env_map: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .source(Some(env_map)),
        );
        let loaded = builder
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        loaded
            .try_deserialize::<Config>()
            .map_err(|e| ConfigError::Load(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
