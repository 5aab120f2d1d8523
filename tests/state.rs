//! `_pgch_state` in a real ClickHouse: written, read back, latest write wins, per slot.

use pgch::config::{DestinationSettings, Secret};
use pgch::sink::state::{keys, StateStore};
use pgch::testkit::clickhouse::ClickHouse;

#[tokio::test]
async fn state_round_trips_and_the_latest_write_wins() {
    let ch = ClickHouse::shared();
    let db = ch.create_database().await.unwrap();
    let settings = DestinationSettings {
        url: ch.url.clone(),
        user: ch.user.clone(),
        password: Secret::new(ch.password.clone()),
        database: db,
        connect_timeout: std::time::Duration::from_secs(10),
        cluster: None,
        table_names: Default::default(),
        table_options: Default::default(),
        create_views: true,
    };
    let a = StateStore::open(&settings, "slot_a").await.unwrap();
    let b = StateStore::open(&settings, "slot_b").await.unwrap();
    assert!(a.load().await.unwrap().is_empty());
    a.put(keys::SYSTEM_IDENTIFIER, "7311").await.unwrap();
    a.put(keys::CONSISTENT_POINT, "0/1").await.unwrap();
    a.put(keys::CONSISTENT_POINT, "0/2").await.unwrap();
    a.put(
        &keys::copy_done("public_t", "0-100"),
        "it's \"done\"\twith\ttabs",
    )
    .await
    .unwrap();
    b.put(keys::SYSTEM_IDENTIFIER, "other").await.unwrap();
    let state = a.load().await.unwrap();
    assert_eq!(
        state.get(keys::SYSTEM_IDENTIFIER).map(String::as_str),
        Some("7311")
    );
    assert_eq!(
        state.get(keys::CONSISTENT_POINT).map(String::as_str),
        Some("0/2")
    );
    assert_eq!(
        state.get("copy/public_t/0-100").map(String::as_str),
        Some("it's \"done\"\twith\ttabs")
    );
    assert_eq!(state.len(), 3);
    assert_eq!(b.load().await.unwrap().len(), 1);
}
