//! Loading, validation and redaction of the configuration.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn minimal_env() -> Vec<(String, String)> {
    env(&[
        (
            "PGCH__SOURCE__URL",
            "postgres://clickpipes_user.branch1:s3cr%40t@db.example:5432/app?sslmode=require",
        ),
        ("PGCH__SOURCE__PUBLICATION", "clickpipes"),
        ("PGCH__DESTINATION__URL", "http://localhost:8123"),
        ("PGCH__DESTINATION__PASSWORD", "chpass"),
    ])
}

#[test]
fn environment_alone_is_enough() {
    let cfg = Config::load_with_env(None, minimal_env()).unwrap();
    let s = cfg.validate().unwrap();
    assert_eq!(s.source.endpoint.user, "clickpipes_user.branch1");
    assert_eq!(s.source.endpoint.password.expose(), "s3cr@t");
    assert_eq!(s.source.endpoint.database, "app");
    assert_eq!(s.source.endpoint.port, 5432);
    assert_eq!(s.source.endpoint.sslmode, SslMode::Require);
    assert_eq!(s.source.slot, DEFAULT_SLOT);
    assert_eq!(s.destination.database, DEFAULT_DESTINATION_DATABASE);
    assert_eq!(s.mode, Mode::SnapshotAndCdc);
}

#[test]
fn secrets_never_appear_in_debug() {
    let cfg = Config::load_with_env(None, minimal_env()).unwrap();
    let s = cfg.validate().unwrap();
    for text in [format!("{cfg:?}"), format!("{s:?}")] {
        assert!(!text.contains("s3cr"), "{text}");
        assert!(!text.contains("chpass"), "{text}");
        assert!(text.contains("***"), "{text}");
    }
}

#[test]
fn file_and_env_merge_with_env_winning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgch.toml");
    std::fs::write(
        &path,
        r#"
[source]
host = "localhost"
port = 6432
user = "u"
database = "d"
publication = "p"
slot = "from_file"
[destination]
url = "http://ch:8123"
[pipeline]
mode = "snapshot_only"
"#,
    )
    .unwrap();
    let cfg = Config::load_with_env(
        Some(&path),
        env(&[
            ("PGCH__SOURCE__SLOT", "from_env"),
            ("PGCH_TEST_CLICKHOUSE_URL", "x"),
        ]),
    )
    .unwrap();
    let s = cfg.validate().unwrap();
    assert_eq!(s.source.slot, "from_env");
    assert_eq!(s.source.endpoint.port, 6432);
    assert_eq!(s.mode, Mode::SnapshotOnly);
}

#[test]
fn unknown_keys_are_rejected() {
    let err = Config::load_with_env(None, env(&[("PGCH__SOURCE__PUBLICATOIN", "p")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("publicatoin"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgch.toml");
    std::fs::write(&path, "[sink]\nurl = \"x\"\n").unwrap();
    let err = Config::load_with_env(Some(&path), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sink"), "{err}");
}

/// The key a configuration from `env` is refused for (it must be refused for a key).
fn refused_key(env: Vec<(String, String)>) -> &'static str {
    let err = Config::load_with_env(None, env)
        .unwrap()
        .validate()
        .unwrap_err();
    match err {
        ConfigError::Invalid { key, .. } => key,
        other => panic!("refused, but not for a key: {other}"),
    }
}

#[test]
fn validation_names_the_key_and_rule() {
    let mut e = minimal_env();
    e.push(("PGCH__SOURCE__SLOT".into(), "Bad-Slot".into()));
    assert_eq!(refused_key(e), "source.slot");

    let e = env(&[
        ("PGCH__SOURCE__URL", "postgres://u@h/d"),
        ("PGCH__DESTINATION__URL", "http://x"),
    ]);
    assert_eq!(refused_key(e), "source.publication");

    let mut e = minimal_env();
    e.retain(|(k, _)| k != "PGCH__DESTINATION__URL");
    e.push(("PGCH__DESTINATION__URL".into(), "tcp://x:9000".into()));
    let err = Config::load_with_env(None, e)
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("destination.url"), "{err}");

    let mut e = minimal_env();
    e.push(("PGCH__SOURCE__SSLMODE".into(), "verify-full".into()));
    assert_eq!(refused_key(e), "source.sslrootcert");
}

#[test]
fn missing_file_is_a_clear_error() {
    let err = Config::load_with_env(Some(Path::new("/nonexistent/pgch.toml")), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/pgch.toml"), "{err}");
}

#[test]
fn redact_url_hides_password() {
    assert_eq!(
        redact_url("postgres://u:pw@h:5432/d"),
        "postgres://u:***@h:5432/d"
    );
    assert_eq!(redact_url("http://h:8123"), "http://h:8123/");
}

#[test]
fn example_config_parses_and_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pgch.example.toml");
    let cfg = Config::load_with_env(Some(&path), env(&[])).unwrap();
    cfg.validate().unwrap();
}

#[test]
fn standby_urls_come_as_a_comma_list_and_take_the_source_password_for_the_same_user() {
    let mut e = minimal_env();
    e.extend(env(&[(
        "PGCH__SOURCE__STANDBY_URLS",
        "postgres://clickpipes_user.branch1@standby-1:5432/app, postgres://other:pw%21@standby-2:5433/app",
    )]));
    let cfg = Config::load_with_env(None, e).unwrap();
    let text = format!("{cfg:?}");
    assert!(!text.contains("pw!") && !text.contains("pw%21"), "{text}");
    let s = cfg.validate().unwrap();
    let standbys = &s.source.standbys;
    assert_eq!(standbys.len(), 2);
    assert_eq!(standbys[0].host, "standby-1");
    assert_eq!(
        standbys[0].password.expose(),
        "s3cr@t",
        "the source's, same user"
    );
    assert_eq!(standbys[1].port, 5433);
    assert_eq!(standbys[1].password.expose(), "pw!");
    assert!(!format!("{s:?}").contains("pw!"));

    let mut bad = minimal_env();
    bad.push((
        "PGCH__SOURCE__STANDBY_URLS".into(),
        "mysql://standby:3306/app".into(),
    ));
    let err = Config::load_with_env(None, bad)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("source.standby_urls"), "{err}");
}

#[test]
fn no_standby_urls_means_none_watched() {
    let s = Config::load_with_env(None, minimal_env())
        .unwrap()
        .validate()
        .unwrap();
    assert!(s.source.standbys.is_empty());
}

#[test]
fn a_multi_host_url_lists_every_host_in_order_and_may_ask_for_the_primary() {
    let mut e = minimal_env();
    e.retain(|(k, _)| k != "PGCH__SOURCE__URL");
    e.push((
        "PGCH__SOURCE__URL".into(),
        "postgres://u.main:p%40ss@db-a:5432,db-b:5433,[::1]/app?target_session_attrs=read-write&sslmode=disable".into(),
    ));
    let cfg = Config::load_with_env(None, e).unwrap();
    assert!(!format!("{cfg:?}").contains("p%40ss"), "{cfg:?}");
    let ep = cfg.validate().unwrap().source.endpoint;
    assert_eq!((ep.host.as_str(), ep.port), ("db-a", 5432));
    assert_eq!(
        ep.other_hosts,
        [("db-b".to_string(), 5433), ("::1".to_string(), 5432)]
    );
    assert!(ep.read_write_only);
    assert_eq!(ep.password.expose(), "p@ss");
    assert_eq!(ep.database, "app");
    assert_eq!(ep.address(), "db-a:5432,db-b:5433,[::1]:5432");
    let hosts: Vec<String> = ep.candidates().iter().map(|c| c.address()).collect();
    assert_eq!(hosts, ["db-a:5432", "db-b:5433", "[::1]:5432"]);
    assert!(ep.candidates().iter().all(|c| c.read_write_only));

    assert_eq!(
        redact_url("postgres://u:secret@a:1,b:2/db?x=1"),
        "postgres://u:***@a:1,b:2/db?x=1"
    );
    for bad in [
        "postgres://u@a:5432,b:notaport/db",
        "postgres://u@a:5432,/db",
        "postgres://u@a/db?target_session_attrs=standby",
    ] {
        let mut e = minimal_env();
        e.retain(|(k, _)| k != "PGCH__SOURCE__URL");
        e.push(("PGCH__SOURCE__URL".into(), bad.into()));
        let err = Config::load_with_env(None, e).unwrap().validate();
        assert!(err.is_err(), "{bad}");
    }
}

#[test]
fn standby_decoding_is_opt_in_and_the_primary_url_needs_it() {
    let s = Config::load_with_env(None, minimal_env())
        .unwrap()
        .validate()
        .unwrap();
    assert!(!s.source.standby_decoding && s.source.primary.is_none());

    let mut on = minimal_env();
    on.extend(env(&[
        ("PGCH__SOURCE__STANDBY_DECODING", "true"),
        (
            "PGCH__SOURCE__PRIMARY_URL",
            "postgres://clickpipes_user.branch1@primary-1:5432/app",
        ),
    ]));
    let s = Config::load_with_env(None, on).unwrap().validate().unwrap();
    assert!(s.source.standby_decoding);
    let primary = s.source.primary.as_ref().unwrap();
    assert_eq!(primary.host, "primary-1");
    assert_eq!(
        primary.password.expose(),
        "s3cr@t",
        "the source's, same user"
    );

    let mut stray = minimal_env();
    stray.push((
        "PGCH__SOURCE__PRIMARY_URL".into(),
        "postgres://u@primary-1:5432/app".into(),
    ));
    let err = Config::load_with_env(None, stray)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("source.primary_url") && err.contains("standby_decoding"),
        "{err}"
    );
}

#[test]
fn table_mappings_are_read_from_the_file_and_judged_and_views_switch_off_from_the_environment() {
    let dir = std::env::temp_dir().join(format!("pgch-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mapping.toml");
    std::fs::write(
        &path,
        r#"
[[tables]]
source = "public.orders"
order_by = ["region"]
partition_by = " toYYYYMM(placed) "
exclude_columns = ["token"]
column_types = { total = "Decimal(12, 2)" }

[[tables]]
source = "public.ledger"
mode = "history"
"#,
    )
    .unwrap();
    let mut e = minimal_env();
    e.push(("PGCH__DESTINATION__CREATE_VIEWS".into(), "false".into()));
    let s = Config::load_with_env(Some(&path), e)
        .unwrap()
        .validate()
        .unwrap();
    assert!(!s.destination.create_views);
    let orders = &s.destination.table_options["public.orders"];
    assert_eq!(orders.partition_by.as_deref(), Some("toYYYYMM(placed)"));
    assert_eq!(
        orders.fingerprint(),
        "order_by=[region]; partition_by=toYYYYMM(placed); exclude_columns=[token]; column_types={total: Decimal(12,2)}"
    );
    assert_eq!(
        s.destination.table_options["public.ledger"].fingerprint(),
        "mode=history"
    );
    assert!(
        Config::load_with_env(None, minimal_env())
            .unwrap()
            .validate()
            .unwrap()
            .destination
            .create_views
    );

    for (bad, key) in [
        ("order_by = [\"a\", \"a\"]", "tables.order_by"),
        ("partition_by = \"  \"", "tables.partition_by"),
        (
            "order_by = [\"a\"]\nexclude_columns = [\"a\"]",
            "tables.exclude_columns",
        ),
        (
            "exclude_columns = [\"a\"]\ncolumn_types = { a = \"String\" }",
            "tables.column_types",
        ),
        ("mode = \"history\"\norder_by = [\"a\"]", "tables.order_by"),
    ] {
        std::fs::write(&path, format!("[[tables]]\nsource = \"public.t\"\n{bad}\n")).unwrap();
        let err = Config::load_with_env(Some(&path), minimal_env())
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains(key), "{bad}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_unix_socket_directory_is_a_host_as_libpq_writes_it() {
    let endpoint = |url: &str| {
        let mut e = minimal_env();
        e.retain(|(k, _)| k != "PGCH__SOURCE__URL");
        e.push(("PGCH__SOURCE__URL".into(), url.into()));
        Config::load_with_env(None, e)
            .and_then(|c| c.validate())
            .map(|s| s.source.endpoint)
    };
    for url in [
        "postgres://u.main@/app?host=/var/run/postgresql",
        "postgres://u.main@localhost/app?host=%2Fvar%2Frun%2Fpostgresql",
        "postgres://u.main@%2Fvar%2Frun%2Fpostgresql/app",
    ] {
        let ep = endpoint(url).unwrap();
        assert_eq!(ep.host, "/var/run/postgresql", "{url}");
        assert_eq!((ep.user.as_str(), ep.database.as_str()), ("u.main", "app"));
        assert_eq!(
            ep.socket_path(),
            Some(std::path::PathBuf::from(
                "/var/run/postgresql/.s.PGSQL.5432"
            ))
        );
        assert_eq!(ep.address(), "/var/run/postgresql/.s.PGSQL.5432");
    }
    assert_eq!(
        redact_url("postgres://u:secret@/app?host=/tmp"),
        "postgres://u:***@/app?host=/tmp"
    );
    let ep = endpoint("postgres://u@/app?host=/tmp&sslmode=require").unwrap();
    assert_eq!(ep.address(), "/tmp/.s.PGSQL.5432");
    let tcp = endpoint("postgres://u@db.example:6432/app").unwrap();
    assert_eq!(tcp.socket_path(), None);
    assert!(endpoint("postgres://u@a,b/app?host=/tmp").is_err());
    assert!(endpoint("postgres://u@/app").is_err());
}
