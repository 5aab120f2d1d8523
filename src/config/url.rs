//! Postgres URLs as libpq writes them (`postgres://user:pass@host:port/db?sslmode=…`,
//! a Unix socket as `postgres://user@/db?host=/var/run/postgresql`), kept apart from
//! the rest of the configuration so the URL rules live in one place.

use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;

use super::{
    invalid, ConfigError, PgEndpoint, Secret, SslMode, DEFAULT_CONNECT_TIMEOUT_SECS,
    DEFAULT_PG_PORT,
};

pub(super) fn parse_pg_url(raw: &str) -> Result<PgEndpoint, ConfigError> {
    let (single, other_hosts) = split_hosts(raw)?;
    let (single, host_left_out) = fill_empty_host(&single);
    let url = url::Url::parse(&single).map_err(|e| {
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
    // libpq's `?host=/dir` (a Unix socket directory) names the host instead of the
    // authority, which may then be empty: `postgres://user@/db?host=/var/run/postgresql`.
    let host_param = url
        .query_pairs()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.into_owned());
    let url_host = if host_left_out {
        String::new()
    } else {
        decode_component(url.host_str().unwrap_or(""), "source.url")?
    };
    let host = match host_param {
        Some(h) if !h.is_empty() => h,
        _ if !url_host.is_empty() => url_host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        _ => return Err(invalid("source.url", "has no host")),
    };
    if !other_hosts.is_empty() && host.starts_with('/') {
        return Err(invalid(
            "source.url",
            "a Unix socket directory cannot be one of several hosts",
        ));
    }
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
        other_hosts,
        read_write_only: false,
    };
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "sslmode" => {
                ep.sslmode = parse_sslmode(&value)?;
            }
            "sslrootcert" => ep.sslrootcert = Some(PathBuf::from(value.as_ref())),
            "host" => {}
            "connect_timeout" => {
                let secs: u64 = value.parse().map_err(|_| {
                    invalid("source.url", format!("connect_timeout={value} is not a number of seconds"))
                })?;
                ep.connect_timeout = Duration::from_secs(secs.max(1));
            }
            "target_session_attrs" => {
                ep.read_write_only = match value.as_ref() {
                    "read-write" | "primary" => true,
                    "any" => false,
                    other => {
                        return Err(invalid(
                            "source.url",
                            format!("target_session_attrs={other} is not supported: use read-write (only the primary may be used) or any"),
                        ))
                    }
                }
            }
            other => {
                return Err(invalid(
                    "source.url",
                    format!("unsupported URL parameter `{other}` (supported: host, sslmode, sslrootcert, connect_timeout, target_session_attrs)"),
                ))
            }
        }
    }
    Ok(ep)
}

/// A multi-host URL (`postgres://u:p@h1:5432,h2:5433/db`, libpq syntax) as the URL of
/// its first host, which the `url` crate parses, and the other hosts in order.
fn split_hosts(raw: &str) -> Result<(String, Vec<(String, u16)>), ConfigError> {
    let Some(scheme_end) = raw.find("://") else {
        return Ok((raw.to_string(), Vec::new()));
    };
    let after = scheme_end + 3;
    let authority_end = raw[after..]
        .find(['/', '?', '#'])
        .map_or(raw.len(), |i| after + i);
    let authority = &raw[after..authority_end];
    let hosts_start = authority.rfind('@').map_or(0, |i| i + 1);
    let hosts = &authority[hosts_start..];
    if !hosts.contains(',') {
        return Ok((raw.to_string(), Vec::new()));
    }
    let mut parts = hosts.split(',');
    let first = parts.next().unwrap_or_default();
    let mut others = Vec::new();
    for part in parts {
        others.push(parse_host_port(part)?);
    }
    let single = format!(
        "{}{}{}",
        &raw[..after + hosts_start],
        first,
        &raw[authority_end..]
    );
    Ok((single, others))
}

/// A URL whose authority names no host (`postgres://user@/db?host=/dir`, which libpq
/// reads as "the host is in the parameters") with a placeholder the `url` crate accepts,
/// and whether the placeholder was put in.
fn fill_empty_host(raw: &str) -> (String, bool) {
    let Some(scheme_end) = raw.find("://") else {
        return (raw.to_string(), false);
    };
    let after = scheme_end + 3;
    let authority_end = raw[after..]
        .find(['/', '?', '#'])
        .map_or(raw.len(), |i| after + i);
    let hosts_start = raw[after..authority_end]
        .rfind('@')
        .map_or(after, |i| after + i + 1);
    let host_port = &raw[hosts_start..authority_end];
    if !host_port.is_empty() && !host_port.starts_with(':') {
        return (raw.to_string(), false);
    }
    let filled = format!("{}localhost{}", &raw[..hosts_start], &raw[hosts_start..]);
    (filled, true)
}

/// `host`, `host:port` or `[v6]:port` of a multi-host URL.
fn parse_host_port(part: &str) -> Result<(String, u16), ConfigError> {
    let bad = || {
        invalid(
            "source.url",
            format!("`{part}` in the host list is not host or host:port"),
        )
    };
    let (host, port) = if let Some(rest) = part.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(bad)?;
        (host, tail.strip_prefix(':'))
    } else {
        match part.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (part, None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad())?,
        None => DEFAULT_PG_PORT,
    };
    Ok((host.to_string(), port))
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
    let (single, others) = match split_hosts(raw) {
        Ok(split) => split,
        Err(_) => return "<unparseable url>".to_string(),
    };
    if !others.is_empty() {
        // Redact the first host's form, then put the host list back.
        let redacted = redact_url(&single);
        let list: Vec<String> = others
            .iter()
            .map(|(h, p)| {
                if h.contains(':') {
                    format!("[{h}]:{p}")
                } else {
                    format!("{h}:{p}")
                }
            })
            .collect();
        return match redacted.find("://").and_then(|i| {
            let after = i + 3;
            redacted[after..].find(['/', '?', '#']).map(|j| after + j)
        }) {
            Some(end) => format!(
                "{},{}{}",
                &redacted[..end],
                list.join(","),
                &redacted[end..]
            ),
            None => format!("{redacted},{}", list.join(",")),
        };
    }
    let (filled, host_left_out) = fill_empty_host(raw);
    match url::Url::parse(&filled) {
        Ok(mut url) => {
            if url.password().is_some() {
                // set_password only fails for URLs that cannot carry one.
                let _ = url.set_password(Some("***"));
            }
            let text = url.to_string();
            if host_left_out {
                // Take the placeholder out again: the URL keeps the form it was given.
                match text.find("@localhost") {
                    Some(_) => text.replacen("@localhost", "@", 1),
                    None => text.replacen("://localhost", "://", 1),
                }
            } else {
                text
            }
        }
        Err(_) => "<unparseable url>".to_string(),
    }
}

/// A `source.standby_urls` or `source.primary_url` entry; the source's password, TLS
/// root and timeout fill in what the URL leaves out, so another server of the same
/// cluster needs only its address.
pub(super) fn related_endpoint(
    key: &'static str,
    url: &str,
    source: &PgEndpoint,
) -> Result<PgEndpoint, ConfigError> {
    let mut ep = parse_pg_url(url).map_err(|e| match e {
        ConfigError::Invalid { rule, .. } => invalid(key, format!("{}: {rule}", redact_url(url))),
        other => other,
    })?;
    if ep.password.is_empty() && ep.user == source.user {
        ep.password = source.password.clone();
    }
    if ep.sslrootcert.is_none() {
        ep.sslrootcert = source.sslrootcert.clone();
    }
    ep.connect_timeout = source.connect_timeout;
    Ok(ep)
}
