//! The ClickHouse HTTP client (the official `clickhouse` crate) and what its errors mean.
//!
//! ClickHouse errors are classified by their numeric code (`Code: N.` in the body, or
//! the `X-ClickHouse-Exception-Code` header the crate folds into the body), never by
//! message text, and described in one sentence that names the server.

use std::error::Error as _;

use clickhouse::Client;

use crate::config::DestinationSettings;

/// ClickHouse's code for a rejected user or password.
pub const CODE_AUTHENTICATION_FAILED: u32 = 516;
/// ClickHouse's code for a missing database.
pub const CODE_UNKNOWN_DATABASE: u32 = 81;
/// ClickHouse's code for a missing privilege.
pub const CODE_ACCESS_DENIED: u32 = 497;

/// Why a ClickHouse request failed, in terms the operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot reach ClickHouse at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("ClickHouse at {url} rejected user \"{user}\": wrong password or no such user (code 516): check destination.user and destination.password")]
    Authentication { url: String, user: String },
    #[error("ClickHouse at {url} answered with error code {code}: {message}")]
    Server {
        url: String,
        code: u32,
        message: String,
    },
    #[error("ClickHouse at {url} failed: {cause}")]
    Other { url: String, cause: String },
}

impl SinkError {
    /// The ClickHouse error code, when the server answered with one.
    pub fn code(&self) -> Option<u32> {
        match self {
            SinkError::Server { code, .. } => Some(*code),
            SinkError::Authentication { .. } => Some(CODE_AUTHENTICATION_FAILED),
            _ => None,
        }
    }
}

/// A client for the destination; `with_database` chooses whether requests run in the
/// destination database (it may not exist yet during checks).
pub fn client(settings: &DestinationSettings, with_database: bool) -> Client {
    let mut client = Client::default()
        .with_url(&settings.url)
        .with_user(&settings.user)
        .with_compression(clickhouse::Compression::None);
    if !settings.password.is_empty() {
        client = client.with_password(settings.password.expose());
    }
    if with_database {
        client = client.with_database(&settings.database);
    }
    client
}

/// Runs a query and returns its TabSeparated output as text (works on every server
/// version, unlike the typed row formats).
pub async fn query_text(
    client: &Client,
    settings: &DestinationSettings,
    sql: &str,
) -> Result<String, SinkError> {
    let run = async {
        let mut cursor = client.query(sql).fetch_bytes("TabSeparated")?;
        cursor.collect().await
    };
    let bytes = match tokio::time::timeout(settings.connect_timeout, run).await {
        Ok(result) => result.map_err(|e| describe(settings, &e))?,
        Err(_) => {
            return Err(SinkError::Unreachable {
                url: settings.url.clone(),
                cause: format!("no answer within {} s", settings.connect_timeout.as_secs()),
            })
        }
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Runs a statement that returns nothing.
pub async fn execute(
    client: &Client,
    settings: &DestinationSettings,
    sql: &str,
) -> Result<(), SinkError> {
    query_text(client, settings, sql).await.map(|_| ())
}

/// Maps a crate error to what it means for the operator.
pub fn describe(settings: &DestinationSettings, err: &clickhouse::error::Error) -> SinkError {
    let url = settings.url.clone();
    match err {
        clickhouse::error::Error::BadResponse(body) => match exception_code(body) {
            Some(CODE_AUTHENTICATION_FAILED) => SinkError::Authentication {
                url,
                user: settings.user.clone(),
            },
            Some(code) => SinkError::Server {
                url,
                code,
                message: first_line(body),
            },
            None => SinkError::Other {
                url,
                cause: first_line(body),
            },
        },
        clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut => {
            SinkError::Unreachable {
                url,
                cause: innermost_cause(err),
            }
        }
        other => SinkError::Other {
            url,
            cause: other.to_string(),
        },
    }
}

/// The `Code: N.` of a ClickHouse exception text.
pub fn exception_code(body: &str) -> Option<u32> {
    let start = body.find("Code: ")? + "Code: ".len();
    let digits: String = body[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn first_line(body: &str) -> String {
    let line = body.lines().next().unwrap_or("").trim();
    let mut text: String = line.chars().take(500).collect();
    if text.is_empty() {
        text = "(empty response)".into();
    }
    text
}

fn innermost_cause(err: &clickhouse::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !t.is_empty() {
            text = t;
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_codes_are_read_from_the_body() {
        assert_eq!(
            exception_code("Code: 516. DB::Exception: default: Authentication failed"),
            Some(516)
        );
        assert_eq!(
            exception_code("Code: 60. DB::Exception: Table x doesn't exist"),
            Some(60)
        );
        assert_eq!(exception_code("garbage"), None);
    }
}
