//! `pgch check` against real servers: a source set up the way the ClickPipes /
//! PlanetScale guide says passes; each misconfiguration yields its own result with a fix.

mod common;

use common::{guide_settings, guide_source, settings_for, PublicationShape};
use pgch::check::{self, CheckResult, Outcome, Report};
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::{PgCluster, PgOptions};
use pgch::testkit::services;

fn outcome_of<'a>(report: &'a Report, name: &str) -> Vec<&'a CheckResult> {
    let found = report.named(name);
    assert!(
        !found.is_empty(),
        "no `{name}` check in:\n{}",
        report.render_text()
    );
    found
}

fn assert_failed_with(report: &Report, name: &str, observed: &str, fix: &str) {
    let hit = outcome_of(report, name).into_iter().find(|c| {
        c.outcome == Outcome::Failed
            && c.observed.contains(observed)
            && c.fix.as_deref().unwrap_or("").contains(fix)
    });
    assert!(
        hit.is_some(),
        "expected `{name}` to fail with observed ~ {observed:?} and fix ~ {fix:?}:\n{}",
        report.render_text()
    );
    assert!(report.has_failures());
}

fn assert_warned_with(report: &Report, name: &str, observed: &str) {
    let hit = outcome_of(report, name).into_iter().find(|c| {
        c.outcome == Outcome::Warning && c.observed.contains(observed) && c.fix.is_some()
    });
    assert!(
        hit.is_some(),
        "expected `{name}` to warn with {observed:?}:\n{}",
        report.render_text()
    );
}

/// Everything ok, except the shared cluster's unlimited `max_slot_wal_keep_size` and
/// the failover lines a single server without standbys (or before 17) has no use for.
fn assert_passes(report: &Report) {
    assert!(!report.has_failures(), "{}", report.render_text());
    for c in &report.checks {
        let single_server = matches!(c.name, "failover" | "synchronized_standby_slots")
            && c.outcome == Outcome::NotApplicable;
        if c.name != "max_slot_wal_keep_size" && !single_server {
            assert_eq!(c.outcome, Outcome::Ok, "{}", report.render_text());
        }
    }
    for name in [
        "source_connection",
        "replication_connection",
        "server_version",
        "wal_level",
        "primary",
        "role_replication",
        "publication",
        "publication_actions",
        "publication_tables",
        "select_privilege",
        "replica_identity",
        "destination_names",
        "replication_slot",
        "wal_senders",
        "clickhouse_connection",
        "clickhouse_version",
        "clickhouse_database",
        "clickhouse_types",
    ] {
        outcome_of(report, name);
    }
}

#[tokio::test]
async fn guide_user_with_for_table_publication_passes_every_check() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let report = check::run(&guide_settings(pg, &src, &[])).await;
    assert_passes(&report);
    let tables = &outcome_of(&report, "publication_tables")[0].observed;
    assert!(
        tables.contains("public.customers") && tables.contains("public.orders"),
        "{tables}"
    );
    let role = &outcome_of(&report, "role_replication")[0].observed;
    assert!(
        role.contains("has REPLICATION"),
        "connected as a non-superuser: {role}"
    );
    let types = &outcome_of(&report, "clickhouse_types")[0].observed;
    assert!(
        types.contains("0001-01-01..9999-12-31") && types.contains("Time64(6)"),
        "{types}"
    );
}

#[tokio::test]
async fn guide_user_with_tables_in_schema_publication_passes_every_check() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTablesInSchema);
    let report = check::run(&guide_settings(pg, &src, &[])).await;
    assert_passes(&report);
}

#[tokio::test]
async fn planetscale_branch_suffix_user_passes_untouched() {
    let pg = PgCluster::shared();
    let src = guide_source(
        pg,
        Some("clickpipes_user.branch1"),
        PublicationShape::ForTable,
    );
    let report = check::run(&guide_settings(pg, &src, &[])).await;
    assert_passes(&report);
    let conn = &outcome_of(&report, "source_connection")[0].observed;
    assert!(conn.contains("\"clickpipes_user.branch1\""), "{conn}");
}

#[tokio::test]
async fn wal_level_replica_fails_with_the_setting_to_change() {
    let pg = PgCluster::start(PgOptions::default().setting("wal_level", "replica")).unwrap();
    let src = guide_source(&pg, None, PublicationShape::ForTable);
    let report = check::run(&guide_settings(&pg, &src, &[])).await;
    assert_failed_with(
        &report,
        "wal_level",
        "wal_level is replica",
        "wal_level = logical",
    );
}

#[tokio::test]
async fn deferrable_primary_key_under_default_identity_fails() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.deferred (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, v text);
         ALTER PUBLICATION clickpipes ADD TABLE public.deferred;",
    )
    .unwrap();
    let report = check::run(&guide_settings(pg, &src, &[])).await;
    assert_failed_with(
        &report,
        "replica_identity",
        "public.deferred: its primary key is DEFERRABLE",
        "NOT DEFERRABLE",
    );
}

#[tokio::test]
async fn partitioned_table_without_publish_via_partition_root_fails() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.events (id bigint, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE TABLE public.events_2026 PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         ALTER PUBLICATION clickpipes ADD TABLE public.events;",
    )
    .unwrap();
    let report = check::run(&guide_settings(pg, &src, &[])).await;
    assert_failed_with(
        &report,
        "partitioned_tables",
        "public.events_2026",
        "publish_via_partition_root = true",
    );
    pg.sql(
        &src.database,
        "ALTER PUBLICATION clickpipes SET (publish_via_partition_root = true);",
    )
    .unwrap();
    let report = check::run(&guide_settings(pg, &src, &[])).await;
    assert_passes(&report);
}

#[tokio::test]
async fn keyless_table_without_replica_identity_full_fails_with_both_fixes() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE TABLE public.keyless (a int, b text); ALTER PUBLICATION clickpipes ADD TABLE public.keyless;",
    )
    .unwrap();
    let report = check::run(&guide_settings(pg, &src, &[])).await;
    assert_failed_with(
        &report,
        "replica_identity",
        "public.keyless has neither a primary key",
        "ADD PRIMARY KEY",
    );
    assert_failed_with(
        &report,
        "replica_identity",
        "public.keyless",
        "REPLICA IDENTITY FULL",
    );
    pg.sql(
        &src.database,
        "ALTER TABLE public.keyless REPLICA IDENTITY FULL;",
    )
    .unwrap();
    let report = check::run(&guide_settings(pg, &src, &[])).await;
    assert!(!report.has_failures(), "{}", report.render_text());
    assert_warned_with(
        &report,
        "replica_identity",
        "kept exactly, equal rows included, as a multiset",
    );
}

#[tokio::test]
async fn publication_without_deletes_or_truncates_warns() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "ALTER PUBLICATION clickpipes SET (publish = 'insert, update');",
    )
    .unwrap();
    let report = check::run(&guide_settings(pg, &src, &[])).await;
    assert!(!report.has_failures(), "{}", report.render_text());
    assert_warned_with(
        &report,
        "publication_actions",
        "does not publish delete, truncate",
    );
}

#[tokio::test]
async fn colliding_destination_names_fail() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE SCHEMA a_b; CREATE SCHEMA a;
         CREATE TABLE a_b.c (id int PRIMARY KEY); CREATE TABLE a.b_c (id int PRIMARY KEY);
         ALTER PUBLICATION clickpipes ADD TABLE a_b.c, a.b_c;",
    )
    .unwrap();
    pg.sql(
        &src.database,
        &format!(
            "GRANT USAGE ON SCHEMA a_b, a TO \"{u}\"; GRANT SELECT ON ALL TABLES IN SCHEMA a_b, a TO \"{u}\";",
            u = src.user
        ),
    )
    .unwrap();
    let report = check::run(&guide_settings(pg, &src, &[])).await;
    assert_failed_with(
        &report,
        "destination_names",
        "a.b_c and a_b.c all map to a_b_c",
        "[[tables]]",
    );
    // An override in the config resolves it.
    let mut settings = guide_settings(pg, &src, &[]);
    settings
        .destination
        .table_names
        .insert("a.b_c".into(), "a_b_c_2".into());
    let report = check::run(&settings).await;
    assert_eq!(
        outcome_of(&report, "destination_names")[0].outcome,
        Outcome::Ok,
        "{}",
        report.render_text()
    );
}

#[tokio::test]
async fn user_without_replication_fails() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        "postgres",
        &format!("ALTER USER \"{}\" WITH NOREPLICATION;", src.user),
    )
    .unwrap();
    let report = check::run(&guide_settings(pg, &src, &[])).await;
    assert_failed_with(
        &report,
        "role_replication",
        "neither REPLICATION nor superuser",
        "WITH REPLICATION",
    );
    // The walsender refuses it too, and says the same.
    assert_failed_with(
        &report,
        "replication_connection",
        "refused a replication session",
        "WITH REPLICATION",
    );
    // A snapshot-only pipeline does not need REPLICATION.
    let snapshot = guide_settings(pg, &src, &[("PGCH__PIPELINE__MODE", "snapshot_only")]);
    let report = check::run(&snapshot).await;
    assert!(!report.has_failures(), "{}", report.render_text());
}

#[tokio::test]
async fn rds_replication_membership_counts_as_replication() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    // What Amazon RDS has: a role whose members may replicate (there, the walsender
    // honours it; a plain Postgres does not, so only the role check is asserted).
    pg.sql(
        "postgres",
        &format!(
            "DO $$ BEGIN CREATE ROLE rds_replication; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             ALTER USER \"{u}\" WITH NOREPLICATION;
             GRANT rds_replication TO \"{u}\";",
            u = src.user
        ),
    )
    .unwrap();
    let report = check::run(&guide_settings(pg, &src, &[])).await;
    let role = outcome_of(&report, "role_replication")[0];
    assert!(
        role.observed.contains("member of rds_replication"),
        "{}",
        report.render_text()
    );
    assert!(
        matches!(role.outcome, Outcome::Ok),
        "{}",
        report.render_text()
    );
}

#[tokio::test]
async fn user_without_select_on_a_published_table_fails() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        &format!("REVOKE SELECT ON public.orders FROM \"{}\";", src.user),
    )
    .unwrap();
    let report = check::run(&guide_settings(pg, &src, &[])).await;
    assert_failed_with(
        &report,
        "select_privilege",
        "lacks SELECT on the table public.orders",
        "GRANT SELECT",
    );
}

#[tokio::test]
async fn missing_publication_fails() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let settings = guide_settings(pg, &src, &[("PGCH__SOURCE__PUBLICATION", "nope")]);
    let report = check::run(&settings).await;
    assert_failed_with(
        &report,
        "publication",
        "publication \"nope\" does not exist",
        "CREATE PUBLICATION \"nope\"",
    );
}

#[tokio::test]
async fn standby_server_fails_as_not_the_primary() {
    let primary = PgCluster::start(PgOptions::default()).unwrap();
    let src = guide_source(&primary, None, PublicationShape::ForTable);
    let standby = primary.standby().unwrap();
    let settings = settings_for(
        &standby.url(&src.user, Some(&src.password), &src.database),
        &src.publication,
        &[],
    );
    let report = check::run(&settings).await;
    assert_failed_with(&report, "primary", "standby", "primary");
}

#[tokio::test]
async fn unlimited_or_small_max_slot_wal_keep_size_warns() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let report = check::run(&guide_settings(pg, &src, &[])).await;
    assert_warned_with(&report, "max_slot_wal_keep_size", "-1 (unlimited)");

    let small =
        PgCluster::start(PgOptions::default().setting("max_slot_wal_keep_size", "'1GB'")).unwrap();
    let src = guide_source(&small, None, PublicationShape::ForTable);
    let report = check::run(&guide_settings(&small, &src, &[])).await;
    assert_warned_with(&report, "max_slot_wal_keep_size", "1 GB");

    let large = PgCluster::start(PgOptions::default().setting("max_slot_wal_keep_size", "'200GB'"))
        .unwrap();
    let src = guide_source(&large, None, PublicationShape::ForTable);
    let report = check::run(&guide_settings(&large, &src, &[])).await;
    assert_eq!(
        outcome_of(&report, "max_slot_wal_keep_size")[0].outcome,
        Outcome::Ok,
        "{}",
        report.render_text()
    );
    assert!(!report.has_failures());
}

#[tokio::test]
async fn no_free_replication_slot_fails() {
    let pg = PgCluster::start(PgOptions::default().setting("max_replication_slots", "1")).unwrap();
    let src = guide_source(&pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "SELECT pg_create_logical_replication_slot('someone_else', 'pgoutput');",
    )
    .unwrap();
    let report = check::run(&guide_settings(&pg, &src, &[])).await;
    assert_failed_with(
        &report,
        "replication_slot",
        "1 of max_replication_slots = 1 are in use",
        "pg_drop_replication_slot",
    );
}

#[tokio::test]
async fn clickhouse_unreachable_fails_in_one_sentence() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let port = pgch::testkit::free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let report = check::run(&guide_settings(
        pg,
        &src,
        &[("PGCH__DESTINATION__URL", &url)],
    ))
    .await;
    assert_failed_with(
        &report,
        "clickhouse_connection",
        &format!("cannot reach ClickHouse at {url}"),
        "8123",
    );
    let line = &outcome_of(&report, "clickhouse_connection")[0].observed;
    assert!(!line.contains('\n'), "{line}");
}

#[tokio::test]
async fn clickhouse_wrong_password_fails() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let ch = ClickHouse::start_front(Some(("pgch", "right-password"))).unwrap();
    let report = check::run(&guide_settings(
        pg,
        &src,
        &[
            ("PGCH__DESTINATION__URL", &ch.url),
            ("PGCH__DESTINATION__USER", "pgch"),
            ("PGCH__DESTINATION__PASSWORD", "wrong-password"),
        ],
    ))
    .await;
    assert_failed_with(
        &report,
        "clickhouse_connection",
        "rejected user \"pgch\"",
        "destination.password",
    );
    assert!(!report.render_text().contains("wrong-password"));
    let report = check::run(&guide_settings(
        pg,
        &src,
        &[
            ("PGCH__DESTINATION__URL", &ch.url),
            ("PGCH__DESTINATION__USER", "pgch"),
            ("PGCH__DESTINATION__PASSWORD", "right-password"),
        ],
    ))
    .await;
    assert!(!report.has_failures(), "{}", report.render_text());
}

#[tokio::test]
async fn clickhouse_too_old_fails() {
    if !services::old_clickhouse_available() {
        panic!("Debian's clickhouse-server (18.16) is not installed: run .ci/install");
    }
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let old = services::old_clickhouse_server().unwrap();
    let url = format!("http://127.0.0.1:{}", old.port);
    let report = check::run(&guide_settings(
        pg,
        &src,
        &[
            ("PGCH__DESTINATION__URL", &url),
            ("PGCH__DESTINATION__USER", "default"),
            ("PGCH__DESTINATION__PASSWORD", ""),
        ],
    ))
    .await;
    assert_failed_with(&report, "clickhouse_version", "ClickHouse 18.16", "23.8");
}

#[tokio::test]
async fn pooler_port_fails_for_streaming_but_serves_snapshot_only() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let bouncer = services::pgbouncer(pg.port, &[(&src.user, &src.password)]).unwrap();
    let url = pgch::testkit::postgres::loopback_url(
        bouncer.port,
        &src.user,
        Some(&src.password),
        &src.database,
    );
    let report = check::run(&settings_for(&url, &src.publication, &[])).await;
    assert_failed_with(
        &report,
        "replication_connection",
        "cannot carry replication",
        "port 5432",
    );
    let report = check::run(&settings_for(
        &url,
        &src.publication,
        &[("PGCH__PIPELINE__MODE", "snapshot_only")],
    ))
    .await;
    assert!(
        !report.has_failures(),
        "{}\n{}",
        report.render_text(),
        bouncer.log()
    );
}

#[tokio::test]
async fn non_postgres_listener_is_named_as_unable_to_replicate() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    let url = format!("postgres://u:p@127.0.0.1:{port}/db?sslmode=disable");
    let report = check::run(&settings_for(&url, "clickpipes", &[])).await;
    assert_failed_with(
        &report,
        "replication_connection",
        "not a Postgres message",
        "direct connection",
    );
    assert_failed_with(
        &report,
        "source_connection",
        &format!("127.0.0.1:{port}"),
        "",
    );
}

#[tokio::test]
async fn unreachable_postgres_and_wrong_password_are_one_sentence() {
    let port = pgch::testkit::free_port().unwrap();
    let url = format!("postgres://u:p@127.0.0.1:{port}/db?sslmode=disable");
    let report = check::run(&settings_for(&url, "clickpipes", &[])).await;
    let conn = &outcome_of(&report, "source_connection")[0];
    assert_eq!(conn.outcome, Outcome::Failed);
    assert!(
        conn.observed
            .contains(&format!("Postgres at 127.0.0.1:{port}")),
        "{}",
        conn.observed
    );
    assert!(conn.observed.contains("refused"), "{}", conn.observed);
    assert!(!conn.observed.contains('\n'));

    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let url = pg.url(&src.user, Some("not-the-password"), &src.database);
    let report = check::run(&settings_for(&url, &src.publication, &[])).await;
    assert_failed_with(
        &report,
        "source_connection",
        "rejected the password",
        "password",
    );
    assert!(!report.render_text().contains("not-the-password"));
}

#[test]
fn cli_check_exits_0_when_ok_and_1_with_failures_and_prints_json() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let ch = ClickHouse::shared();
    let run = |publication: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pgch"))
            .args(["check", "--format", "json"])
            .env(
                "PGCH__SOURCE__URL",
                pg.url(&src.user, Some(&src.password), &src.database),
            )
            .env("PGCH__SOURCE__PUBLICATION", publication)
            .env("PGCH__DESTINATION__URL", &ch.url)
            .env("PGCH__DESTINATION__USER", &ch.user)
            .env("PGCH__DESTINATION__PASSWORD", &ch.password)
            .output()
            .unwrap()
    };
    let ok = run(&src.publication);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let json: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(json["passed"], true);
    let bad = run("missing_publication");
    assert_eq!(bad.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(json["passed"], false);
    assert!(!String::from_utf8_lossy(&bad.stdout).contains(&src.password));
}

#[tokio::test]
async fn max_slot_wal_keep_size_is_not_applicable_on_postgres_12() {
    let bin_dir = pgch::testkit::versions::bin_dir(12).unwrap_or_else(|e| panic!("{e}"));
    let pg = PgCluster::start(PgOptions {
        bin_dir: Some(bin_dir),
        ..Default::default()
    })
    .unwrap();
    assert!(pg.version_num < 130000);
    // Postgres 12 has no FOR TABLES IN SCHEMA: the guide's FOR TABLE form.
    let src = guide_source(&pg, None, PublicationShape::ForTable);
    let report = check::run(&guide_settings(&pg, &src, &[])).await;
    assert!(!report.has_failures(), "{}", report.render_text());
    let keep = outcome_of(&report, "max_slot_wal_keep_size")[0];
    assert_eq!(keep.outcome, Outcome::NotApplicable);
    assert!(
        keep.observed.contains("n/a on Postgres 12"),
        "{}",
        keep.observed
    );
    assert!(outcome_of(&report, "server_version")[0]
        .observed
        .contains("Postgres 12."));
}

#[tokio::test]
async fn an_empty_schema_publication_warns_and_an_empty_table_list_fails() {
    let pg = PgCluster::shared();
    if pg.version_num < 150000 {
        return;
    }
    let src = guide_source(pg, None, PublicationShape::ForTable);
    pg.sql(
        &src.database,
        "CREATE SCHEMA later;
         CREATE PUBLICATION waiting FOR TABLES IN SCHEMA later;
         CREATE PUBLICATION listless FOR TABLE public.orders;
         ALTER PUBLICATION listless DROP TABLE public.orders;",
    )
    .unwrap();
    let waiting = guide_settings(pg, &src, &[("PGCH__SOURCE__PUBLICATION", "waiting")]);
    let report = check::run(&waiting).await;
    assert_warned_with(
        &report,
        "publication_tables",
        "tables created in schema later",
    );
    assert!(
        report.start_blockers().is_empty(),
        "{}",
        report.render_text()
    );
    let listless = guide_settings(pg, &src, &[("PGCH__SOURCE__PUBLICATION", "listless")]);
    let report = check::run(&listless).await;
    assert_failed_with(
        &report,
        "publication_tables",
        "lists no tables",
        "ALTER PUBLICATION",
    );
    assert_eq!(report.start_blockers().len(), 1, "{}", report.render_text());
}

#[tokio::test]
async fn failover_readiness_is_explained_as_unavailable_before_postgres_17() {
    let pg = PgCluster::shared();
    let src = guide_source(pg, None, PublicationShape::ForTable);
    let report = check::run(&guide_settings(pg, &src, &[])).await;
    if pg.version_num < 170000 {
        let failover = outcome_of(&report, "failover");
        assert_eq!(failover.len(), 1, "{}", report.render_text());
        assert_eq!(failover[0].outcome, Outcome::NotApplicable);
        assert!(
            failover[0].observed.contains("has no failover slots"),
            "{}",
            report.render_text()
        );
        assert!(report.named("failover_slot").is_empty());
    } else {
        // A single server: the slot will be a failover slot, no standby to keep it.
        let slot = outcome_of(&report, "failover_slot");
        assert_eq!(slot[0].outcome, Outcome::Ok, "{}", report.render_text());
        assert_eq!(
            outcome_of(&report, "synchronized_standby_slots")[0].outcome,
            Outcome::NotApplicable
        );
    }
}
