//! The three faces of a [`Status`]: text for a terminal, JSON for scripts, and one
//! self-contained HTML page (no external assets: it is served from inside the network
//! pgch runs in) that refreshes itself.

use super::{Level, Status, TableState, TableStatus};

/// Seconds between refreshes of the status page.
pub const PAGE_REFRESH_SECS: u32 = 5;

/// The status as JSON (the `--format json` form; field names are stable).
pub fn json(status: &Status) -> String {
    serde_json::to_string_pretty(status)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot render the status: {e}\"}}"))
}

/// The status for a terminal.
pub fn text(status: &Status) -> String {
    let level = status.level.unwrap_or(Level::Broken);
    let mut out = format!(
        "pgch status: {}  (slot {}, publication {}, ClickHouse database {})\n",
        level.as_str(),
        status.slot_name,
        status.publication,
        status.database
    );
    for r in &status.reasons {
        out.push_str(&format!("  [{}] {}\n", r.level.as_str(), r.message));
    }
    let p = &status.pgch;
    out.push_str("\npgch\n");
    if p.running {
        out.push_str(&format!(
            "  running at {}: phase {}, {}, {}\n",
            p.endpoint,
            p.phase.as_deref().unwrap_or("unknown"),
            if p.live == Some(true) {
                "live"
            } else {
                "NOT live"
            },
            if p.ready == Some(true) {
                "ready"
            } else {
                "not ready"
            },
        ));
        if let Some(lag) = p.lag_seconds {
            out.push_str(&format!("  lag {lag:.2} s"));
            if let Some(lsn) = &p.acknowledged_lsn {
                out.push_str(&format!(", acknowledged {lsn}"));
            }
            out.push('\n');
        }
    } else {
        out.push_str(&format!(
            "  not running (nothing answers at {})\n",
            p.endpoint
        ));
    }
    out.push_str("\nslot\n");
    match &status.slot {
        Some(s) if s.exists => {
            out.push_str(&format!(
                "  {}: {}, confirmed {}, wal_status {}\n",
                status.slot_name,
                if s.active { "active" } else { "inactive" },
                s.confirmed_lsn.as_deref().unwrap_or("-"),
                s.wal_status.as_deref().unwrap_or("-"),
            ));
            out.push_str(&format!("  retained WAL {}\n", retained(s)));
            out.push_str(&format!(
                "  failover slot: {}\n",
                match s.failover {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "not available (Postgres < 17)",
                }
            ));
        }
        Some(_) => out.push_str(&format!("  {}: does not exist\n", status.slot_name)),
        None => out.push_str("  unknown (the source cannot be read)\n"),
    }
    out.push_str(&format!("\ntables ({})\n", status.tables.len()));
    let width = status
        .tables
        .iter()
        .map(|t| t.source.len())
        .max()
        .unwrap_or(0);
    for t in &status.tables {
        out.push_str(&format!(
            "  {:width$}  {:<28} stored {:>10}  last change {}\n",
            t.source,
            state_words(t),
            t.rows_stored
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into()),
            t.last_change_lsn.as_deref().unwrap_or("-"),
        ));
    }
    out
}

/// "copying 3/8 partitions" and the like.
pub fn state_words(t: &TableStatus) -> String {
    match (t.state, t.partitions_done, t.partitions_total) {
        (TableState::Copying, Some(done), Some(total)) => {
            format!("copying {done}/{total} partitions")
        }
        (state, ..) => state.as_str().to_string(),
    }
}

fn retained(s: &super::SlotStatus) -> String {
    let bytes = s
        .retained_bytes
        .map(human_bytes)
        .unwrap_or_else(|| "-".into());
    match (s.max_keep_bytes, s.retained_ratio) {
        (Some(-1), _) => format!("{bytes} (max_slot_wal_keep_size unlimited)"),
        (Some(limit), Some(ratio)) => format!(
            "{bytes} of {} max_slot_wal_keep_size ({:.1}%)",
            human_bytes(limit),
            ratio * 100.0
        ),
        _ => bytes,
    }
}

/// Bytes in the largest binary unit that keeps the number ≥ 1.
pub fn human_bytes(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes.max(0) as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Escapes text for HTML element content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:24px;color:#1d2433;background:#f6f7f9}\
h1{font-size:20px;margin:0 0 4px}.sub{color:#5b6475;margin-bottom:16px}\
.level{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}\
.healthy{background:#2e8540}.attention{background:#c77700}.broken{background:#c0262d}\
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:12px 16px;margin:12px 0}\
h2{font-size:15px;margin:0 0 8px}table{border-collapse:collapse;width:100%}\
td,th{text-align:left;padding:4px 8px;border-bottom:1px solid #eef0f3}th{color:#5b6475;font-weight:500}\
.bar{background:#e6e9ee;border-radius:4px;height:10px;width:160px;display:inline-block;vertical-align:middle}\
.fill{background:#3a6fd8;height:10px;border-radius:4px}.gauge .fill{background:#2e8540}\
.gauge.warn .fill{background:#c77700}.gauge.bad .fill{background:#c0262d}\
ul{margin:4px 0;padding-left:20px}.kv th{width:200px}.num{font-variant-numeric:tabular-nums}";

/// The status page.
pub fn html(status: &Status) -> String {
    let level = status.level.unwrap_or(Level::Broken);
    let mut page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{PAGE_REFRESH_SECS}\">\
         <title>pgch: {}</title><style>{STYLE}</style></head><body>\
         <h1>pgch <span class=\"level {}\" id=\"level\">{}</span></h1>\
         <div class=\"sub\">slot <b>{}</b> · publication <b>{}</b> · ClickHouse database <b>{}</b></div>",
        level.as_str(),
        level.as_str(),
        level.as_str(),
        esc(&status.slot_name),
        esc(&status.publication),
        esc(&status.database),
    );
    if !status.reasons.is_empty() {
        page.push_str("<section id=\"reasons\"><h2>Needs a look</h2><ul>");
        for r in &status.reasons {
            page.push_str(&format!(
                "<li><span class=\"level {0}\">{0}</span> {1}</li>",
                r.level.as_str(),
                esc(&r.message)
            ));
        }
        page.push_str("</ul></section>");
    }
    let p = &status.pgch;
    page.push_str("<section id=\"pgch\"><h2>Pipeline</h2><table class=\"kv\">");
    let row = |k: &str, v: String| format!("<tr><th>{k}</th><td class=\"num\">{v}</td></tr>");
    page.push_str(&row(
        "phase",
        esc(p
            .phase
            .as_deref()
            .unwrap_or(if p.running { "unknown" } else { "not running" })),
    ));
    if let Some(lag) = p.lag_seconds {
        page.push_str(&row("lag", format!("<span id=\"lag\">{lag:.2}</span> s")));
    }
    if let Some(lsn) = &p.acknowledged_lsn {
        page.push_str(&row("acknowledged", esc(lsn)));
    }
    if let Some(m) = p.pipeline_memory_bytes {
        page.push_str(&row("pipeline memory", human_bytes(m as i64)));
    }
    page.push_str("</table></section>");
    page.push_str("<section id=\"slot\"><h2>Replication slot</h2>");
    match &status.slot {
        Some(s) if s.exists => {
            let ratio = s.retained_ratio.unwrap_or(0.0).clamp(0.0, 1.0);
            let class = if ratio >= 0.8 || s.wal_status.as_deref() == Some("lost") {
                "gauge bad"
            } else if ratio >= super::ATTENTION_RATIO {
                "gauge warn"
            } else {
                "gauge"
            };
            page.push_str(&format!(
                "<div>retained WAL <span class=\"{class} bar\"><span class=\"fill\" style=\"width:{:.1}%;display:block\"></span></span> <span id=\"retained\">{}</span></div><table class=\"kv\">",
                ratio * 100.0,
                esc(&retained(s))
            ));
            page.push_str(&row("active", s.active.to_string()));
            page.push_str(&row(
                "confirmed",
                esc(s.confirmed_lsn.as_deref().unwrap_or("-")),
            ));
            page.push_str(&row(
                "wal_status",
                esc(s.wal_status.as_deref().unwrap_or("-")),
            ));
            page.push_str(&row(
                "failover slot",
                match s.failover {
                    Some(true) => "yes".into(),
                    Some(false) => "no".into(),
                    None => "not available (Postgres &lt; 17)".into(),
                },
            ));
            page.push_str("</table>");
        }
        Some(_) => page.push_str("<div>does not exist</div>"),
        None => page.push_str("<div>unknown: the source cannot be read</div>"),
    }
    page.push_str("</section>");
    page.push_str(&format!(
        "<section><h2>Tables ({})</h2><table id=\"tables\"><tr><th>Postgres</th><th>ClickHouse</th><th>state</th><th>progress</th><th>rows stored</th><th>last change</th></tr>",
        status.tables.len()
    ));
    for t in &status.tables {
        let progress = match (t.partitions_done, t.partitions_total) {
            (Some(done), Some(total)) if total > 0 => format!(
                "<span class=\"bar\"><span class=\"fill\" style=\"width:{:.1}%;display:block\"></span></span> {done}/{total}",
                done as f64 * 100.0 / total as f64
            ),
            _ => String::new(),
        };
        let progress = match (t.rows_copied, t.rows_estimated) {
            (Some(copied), Some(estimated)) if t.state == TableState::Copying => {
                format!("{progress} · {copied} of ~{estimated} rows")
            }
            _ => progress,
        };
        page.push_str(&format!(
            "<tr data-table=\"{}\"><td>{}</td><td>{}</td><td class=\"state\">{}</td><td>{progress}</td><td class=\"num rows\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&t.source),
            esc(&t.source),
            esc(&t.destination),
            esc(&state_words(t)),
            t.rows_stored.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
            esc(t.last_change_lsn.as_deref().unwrap_or("-")),
        ));
    }
    page.push_str("</table></section></body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::super::{judge, PgchStatus, SlotStatus, TableStatus};
    use super::*;

    fn sample() -> Status {
        let mut s = Status {
            slot_name: "pgch".into(),
            publication: "pub".into(),
            database: "db".into(),
            state_recorded: true,
            slot: Some(SlotStatus {
                exists: true,
                active: true,
                confirmed_lsn: Some("0/16B3748".into()),
                retained_bytes: Some(3 * 1024 * 1024),
                max_keep_bytes: Some(1024 * 1024 * 1024),
                retained_ratio: Some(3.0 / 1024.0),
                wal_status: Some("reserved".into()),
                failover: Some(true),
                ..SlotStatus::default()
            }),
            tables: vec![TableStatus {
                source: "public.<orders>".into(),
                destination: "public_orders".into(),
                state: TableState::Copying,
                partitions_done: Some(3),
                partitions_total: Some(8),
                rows_copied: None,
                rows_estimated: Some(100),
                rows_stored: Some(42),
                last_change_lsn: None,
            }],
            pgch: PgchStatus {
                endpoint: "127.0.0.1:9187".into(),
                running: true,
                phase: Some("snapshotting".into()),
                live: Some(true),
                ready: Some(false),
                ..PgchStatus::default()
            },
            ..Status::default()
        };
        judge(&mut s);
        s
    }

    #[test]
    fn text_json_and_page_show_the_same_facts() {
        let s = sample();
        let text = text(&s);
        assert!(text.starts_with("pgch status: healthy"), "{text}");
        assert!(text.contains("copying 3/8 partitions"), "{text}");
        assert!(text.contains("3.0 MiB of 1.0 GiB"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&json(&s)).unwrap();
        assert_eq!(json["level"], "healthy");
        assert_eq!(json["tables"][0]["state"], "copying");
        assert_eq!(json["tables"][0]["partitions_done"], 3);
        let page = html(&s);
        assert!(page.contains("copying 3/8 partitions"));
        assert!(page.contains("public.&lt;orders&gt;"), "names are escaped");
        assert!(!page.contains("<orders>"));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no external assets"
        );
        assert!(page.contains("http-equiv=\"refresh\""));
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }
}
