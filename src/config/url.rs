//! Postgres URLs as libpq writes them (`postgres://user:pass@host:port/db?sslmode=…`),
//! kept apart from the rest of the configuration so the URL rules live in one place.

use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;

use super::{
    invalid, ConfigError, PgEndpoint, Secret, SslMode, DEFAULT_CONNECT_TIMEOUT_SECS,
    DEFAULT_PG_PORT,
};

pub(super) fn parse_pg_url(raw: &str) -> Result<PgEndpoint, ConfigError> {
    let url = url::Url::parse(raw).map_err(|e| {
        invalid(
            "source.url",
            format!("not a valid URL ({e}); expected postgres://user:password@host:5432/database"),
        )
    })?;
    if url.scheme() != "postgres" && url.scheme() != "postgresql" {
        return Err(invalid(
            "source.url",
            format!(
                "scheme `{}` is not postgres:// or postgresql://",
                url.scheme()
            ),
        ));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("source.url", "has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let user = decode_component(url.username(), "source.url")?;
    if user.is_empty() {
        return Err(invalid("source.url", "has no user name"));
    }
    let password = decode_component(url.password().unwrap_or(""), "source.url")?;
    let path_db = decode_component(url.path().trim_start_matches('/'), "source.url")?;
    let database = if path_db.is_empty() {
        user.clone()
    } else {
        path_db
    };
    let mut ep = PgEndpoint {
        host,
        port: url.port().unwrap_or(DEFAULT_PG_PORT),
        user,
        password: Secret::new(password),
        database,
        sslmode: SslMode::default(),
        sslrootcert: None,
        connect_timeout: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS),
    };
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "sslmode" => {
                ep.sslmode = parse_sslmode(&value)?;
            }
            "sslrootcert" => ep.sslrootcert = Some(PathBuf::from(value.as_ref())),
            "connect_timeout" => {
                let secs: u64 = value.parse().map_err(|_| {
                    invalid("source.url", format!("connect_timeout={value} is not a number of seconds"))
                })?;
                ep.connect_timeout = Duration::from_secs(secs.max(1));
            }
            other => {
                return Err(invalid(
                    "source.url",
                    format!("unsupported URL parameter `{other}` (supported: sslmode, sslrootcert, connect_timeout)"),
                ))
            }
        }
    }
    Ok(ep)
}

pub(super) fn parse_sslmode(value: &str) -> Result<SslMode, ConfigError> {
    Ok(match value {
        "disable" => SslMode::Disable,
        "prefer" | "allow" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        other => {
            return Err(invalid(
                "source.sslmode",
                format!("`{other}` is not one of disable, prefer, require, verify-ca, verify-full"),
            ))
        }
    })
}

fn decode_component(raw: &str, key: &'static str) -> Result<String, ConfigError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| invalid(key, "contains percent-encoded bytes that are not UTF-8"))
}

/// Replaces the password in a URL with `***`, for logs and `Debug`.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                // set_password only fails for URLs that cannot carry one.
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparseable url>".to_string(),
    }
}
