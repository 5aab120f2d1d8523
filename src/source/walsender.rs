//! Replication commands on a walsender session: `IDENTIFY_SYSTEM`,
//! `CREATE_REPLICATION_SLOT` (both syntaxes: Postgres 15 changed it), `DROP_REPLICATION_SLOT`
//! and `START_REPLICATION`, which turns the session into a [`ReplicationStream`].

use std::time::Duration;

use super::catalog::{quote_ident, quote_literal};
use super::stream::{ReplicationStream, StreamOptions};
use super::wire::{SessionKind, WireConnection, WireError, MAX_MESSAGE_BYTES};
use crate::config::PgEndpoint;
use crate::lsn::Lsn;

/// What `IDENTIFY_SYSTEM` says about the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemInfo {
    /// Unique per cluster: a different value means a different (restored, failed-over) system.
    pub system_id: String,
    pub timeline: u32,
    pub wal_position: Lsn,
    pub database: Option<String>,
}

/// What a new slot's creation does with its snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotSnapshot {
    /// Export a snapshot other sessions can import while this session stays idle.
    Export,
    /// No snapshot (a slot that only streams).
    NoExport,
    /// Use the snapshot in this session's transaction.
    Use,
}

/// A slot just created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedSlot {
    pub name: String,
    /// The first LSN the slot will stream from.
    pub consistent_point: Lsn,
    /// The exported snapshot's name, with [`SlotSnapshot::Export`].
    pub snapshot_name: Option<String>,
}

/// A walsender session (`replication=database`) before streaming starts.
pub struct Walsender {
    conn: WireConnection,
    /// `server_version_num`, e.g. 150018.
    pub server_version: u32,
    /// `wal_sender_timeout`; status updates must come at least three times as often.
    pub wal_sender_timeout: Option<Duration>,
}

/// Errors of replication commands, with the server's words.
pub type WalsenderError = WireError;

impl Walsender {
    /// Opens a walsender session and reads the server version and sender timeout.
    pub async fn connect(ep: &PgEndpoint) -> Result<Self, WalsenderError> {
        let mut conn = WireConnection::connect(ep, SessionKind::Replication).await?;
        let version = first_value(&conn.simple_query("SHOW server_version_num").await?);
        let timeout = first_value(&conn.simple_query("SHOW wal_sender_timeout").await?);
        Ok(Walsender {
            server_version: version.parse().unwrap_or(0),
            wal_sender_timeout: parse_pg_duration(&timeout),
            conn,
        })
    }

    /// `IDENTIFY_SYSTEM`.
    pub async fn identify_system(&mut self) -> Result<SystemInfo, WalsenderError> {
        let rows = self.conn.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows.first().cloned().unwrap_or_default();
        let field = |i: usize| row.get(i).cloned().flatten();
        let lsn_text = field(2).unwrap_or_default();
        Ok(SystemInfo {
            system_id: field(0).unwrap_or_default(),
            timeline: field(1).and_then(|t| t.parse().ok()).unwrap_or(0),
            wal_position: lsn_text.parse().unwrap_or(Lsn::ZERO),
            database: field(3),
        })
    }

    /// Creates a logical `pgoutput` slot (not a failover slot).
    pub async fn create_slot(
        &mut self,
        name: &str,
        temporary: bool,
        snapshot: SlotSnapshot,
    ) -> Result<CreatedSlot, WalsenderError> {
        self.create_slot_with(name, temporary, snapshot, false)
            .await
    }

    /// Creates a logical `pgoutput` slot; with `failover` (honoured on Postgres 17+
    /// only, see [`supports_failover_slots`]) standbys that synchronize slots keep a
    /// copy, so the slot survives a promotion.
    pub async fn create_slot_with(
        &mut self,
        name: &str,
        temporary: bool,
        snapshot: SlotSnapshot,
        failover: bool,
    ) -> Result<CreatedSlot, WalsenderError> {
        let failover = failover && !temporary && supports_failover_slots(self.server_version);
        let sql = create_slot_sql(name, temporary, snapshot, failover, self.server_version);
        let rows = self.conn.simple_query(&sql).await?;
        let row = rows.first().cloned().unwrap_or_default();
        let field = |i: usize| row.get(i).cloned().flatten();
        Ok(CreatedSlot {
            name: field(0).unwrap_or_else(|| name.to_string()),
            consistent_point: field(1).and_then(|l| l.parse().ok()).unwrap_or(Lsn::ZERO),
            snapshot_name: field(2),
        })
    }

    /// `ALTER_REPLICATION_SLOT name (FAILOVER …)` (Postgres 17+): turns an existing
    /// slot into a failover slot, or back.
    pub async fn set_slot_failover(&mut self, name: &str, on: bool) -> Result<(), WalsenderError> {
        let sql = format!(
            "ALTER_REPLICATION_SLOT {} (FAILOVER {on})",
            quote_ident(name)
        );
        self.conn.simple_query(&sql).await.map(|_| ())
    }

    /// Drops a slot; with `wait`, waits for an active consumer to let go.
    pub async fn drop_slot(&mut self, name: &str, wait: bool) -> Result<(), WalsenderError> {
        let sql = format!(
            "DROP_REPLICATION_SLOT {}{}",
            quote_ident(name),
            if wait { " WAIT" } else { "" }
        );
        self.conn.simple_query(&sql).await.map(|_| ())
    }

    /// `START_REPLICATION SLOT … LOGICAL start (…)`: from here on the session is a stream.
    pub async fn start(
        mut self,
        slot: &str,
        start: Lsn,
        publication: &str,
        mut options: StreamOptions,
    ) -> Result<ReplicationStream, WalsenderError> {
        let proto = proto_version_for(self.server_version);
        let sql = start_replication_sql(
            slot,
            start,
            publication,
            proto,
            self.server_version >= 140000,
        );
        self.conn.send_query(&sql).await?;
        loop {
            let frame = self.conn.read_frame(MAX_MESSAGE_BYTES).await?;
            match frame.tag {
                b'W' => break,
                b'N' | b'S' => {}
                b'E' => return Err(super::stream::server_error(self.conn.server(), &frame.body)),
                other => {
                    return Err(WireError::Protocol {
                        server: self.conn.server().to_string(),
                        detail: format!(
                            "START_REPLICATION answered with message '{}' instead of CopyBoth",
                            other as char
                        ),
                    })
                }
            }
        }
        if options.status_interval.is_none() {
            options.status_interval = Some(status_interval(self.wal_sender_timeout));
        }
        Ok(ReplicationStream::start(
            self.conn.into_parts(),
            start,
            options,
        ))
    }

    /// Runs any simple query on the walsender session (e.g. `SHOW`).
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, WalsenderError> {
        self.conn.simple_query(sql).await
    }

    /// Ends the session.
    pub async fn close(self) {
        self.conn.close().await;
    }
}

fn first_value(rows: &[Vec<Option<String>>]) -> String {
    rows.first()
        .and_then(|r| r.first())
        .cloned()
        .flatten()
        .unwrap_or_default()
}

/// The pgoutput protocol version to ask for: the newest the server speaks. Streaming of
/// in-progress transactions stays off (its chunks can abort), so v2+ adds nothing
/// pgch must handle, but asking for what the server offers keeps Message support (14+).
pub fn proto_version_for(server_version: u32) -> u32 {
    match server_version {
        v if v >= 160000 => 4,
        v if v >= 150000 => 3,
        v if v >= 140000 => 2,
        _ => 1,
    }
}

/// Failover slots (synchronized to standbys, `pg_replication_slots.failover`) came
/// with Postgres 17.
pub fn supports_failover_slots(server_version: u32) -> bool {
    server_version >= 170000
}

/// The `CREATE_REPLICATION_SLOT` command in the server's syntax; `failover` is only
/// written for Postgres 17+ (older servers reject the option).
pub fn create_slot_sql(
    name: &str,
    temporary: bool,
    snapshot: SlotSnapshot,
    failover: bool,
    server_version: u32,
) -> String {
    let temp = if temporary { " TEMPORARY" } else { "" };
    let tail = if server_version >= 150000 {
        let word = match snapshot {
            SlotSnapshot::Export => "export",
            SlotSnapshot::NoExport => "nothing",
            SlotSnapshot::Use => "use",
        };
        if failover && supports_failover_slots(server_version) {
            format!(" (SNAPSHOT '{word}', FAILOVER true)")
        } else {
            format!(" (SNAPSHOT '{word}')")
        }
    } else {
        let word = match snapshot {
            SlotSnapshot::Export => "EXPORT_SNAPSHOT",
            SlotSnapshot::NoExport => "NOEXPORT_SNAPSHOT",
            SlotSnapshot::Use => "USE_SNAPSHOT",
        };
        format!(" {word}")
    };
    format!(
        "CREATE_REPLICATION_SLOT {}{temp} LOGICAL pgoutput{tail}",
        quote_ident(name)
    )
}

/// The `START_REPLICATION` command. `publication_names` is a string literal holding a
/// comma-separated list of (quoted) identifiers, so any publication name works.
pub fn start_replication_sql(
    slot: &str,
    start: Lsn,
    publication: &str,
    proto: u32,
    messages: bool,
) -> String {
    let names = quote_literal(&quote_ident(publication));
    let mut options = format!("proto_version '{proto}', publication_names {names}");
    if messages {
        options.push_str(", messages 'true'");
    }
    format!(
        "START_REPLICATION SLOT {} LOGICAL {start} ({options})",
        quote_ident(slot)
    )
}

/// Status updates go out at least three times per `wal_sender_timeout`, and at least
/// every 10 s (pg_recvlogical's default) so the slot's position stays fresh.
pub fn status_interval(wal_sender_timeout: Option<Duration>) -> Duration {
    let ceiling = Duration::from_secs(10);
    match wal_sender_timeout {
        Some(t) if !t.is_zero() => (t / 3).clamp(Duration::from_millis(100), ceiling),
        _ => ceiling,
    }
}

/// Parses a Postgres duration setting as `SHOW` prints it (`60s`, `1min`, `500ms`, `0`).
pub fn parse_pg_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let digits: String = text.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits.parse().ok()?;
    let unit = text[digits.len()..].trim();
    Some(match unit {
        "" | "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86400),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_creation_uses_the_servers_syntax() {
        assert_eq!(
            create_slot_sql("pgch", false, SlotSnapshot::Export, false, 150000),
            "CREATE_REPLICATION_SLOT \"pgch\" LOGICAL pgoutput (SNAPSHOT 'export')"
        );
        assert_eq!(
            create_slot_sql("pgch", true, SlotSnapshot::NoExport, false, 140000),
            "CREATE_REPLICATION_SLOT \"pgch\" TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT"
        );
    }

    #[test]
    fn failover_is_asked_for_only_where_the_server_has_failover_slots() {
        assert_eq!(
            create_slot_sql("pgch", false, SlotSnapshot::NoExport, true, 170000),
            "CREATE_REPLICATION_SLOT \"pgch\" LOGICAL pgoutput (SNAPSHOT 'nothing', FAILOVER true)"
        );
        assert_eq!(
            create_slot_sql("pgch", false, SlotSnapshot::NoExport, true, 160004),
            "CREATE_REPLICATION_SLOT \"pgch\" LOGICAL pgoutput (SNAPSHOT 'nothing')"
        );
        assert!(!supports_failover_slots(160004) && supports_failover_slots(180000));
    }

    #[test]
    fn publication_names_are_quoted_for_any_name() {
        let sql = start_replication_sql("s", Lsn::new(0x1_0000_0010), "my \"pub\", o'k", 4, true);
        assert_eq!(
            sql,
            "START_REPLICATION SLOT \"s\" LOGICAL 1/10 (proto_version '4', publication_names '\"my \"\"pub\"\", o''k\"', messages 'true')"
        );
    }

    #[test]
    fn protocol_version_follows_the_server() {
        assert_eq!(proto_version_for(120000), 1);
        assert_eq!(proto_version_for(130010), 1);
        assert_eq!(proto_version_for(140000), 2);
        assert_eq!(proto_version_for(150000), 3);
        assert_eq!(proto_version_for(180000), 4);
    }

    #[test]
    fn status_interval_is_a_third_of_the_timeout() {
        assert_eq!(parse_pg_duration("1min"), Some(Duration::from_secs(60)));
        assert_eq!(parse_pg_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_pg_duration("0"), Some(Duration::ZERO));
        assert_eq!(
            status_interval(Some(Duration::from_secs(60))),
            Duration::from_secs(10)
        );
        assert_eq!(
            status_interval(Some(Duration::from_secs(6))),
            Duration::from_secs(2)
        );
        assert_eq!(
            status_interval(Some(Duration::ZERO)),
            Duration::from_secs(10)
        );
    }
}
