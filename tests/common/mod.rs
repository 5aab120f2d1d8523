//! Shared set-up for integration tests: a source prepared the way the ClickPipes /
//! PlanetScale guide prescribes, and settings that point pgch at it.

#![allow(dead_code)]

pub mod converge;
pub mod failover;
pub mod partitions;
pub mod process;
pub mod scrape;
pub mod workload;

use pgch::config::{Config, Settings};
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::PgCluster;
use pgch::testkit::unique_name;

/// A database on a test cluster, with the guide's dedicated user and a publication.
pub struct GuideSource {
    pub database: String,
    pub user: String,
    pub password: String,
    pub publication: String,
}

/// How the publication lists its tables.
#[derive(Clone, Copy)]
pub enum PublicationShape {
    ForTable,
    ForTablesInSchema,
}

/// Sample tables, a user set up exactly as the guide says, and a publication.
pub fn guide_source(pg: &PgCluster, user: Option<&str>, shape: PublicationShape) -> GuideSource {
    let database = pg.create_database().expect("create database");
    let user = user
        .map(str::to_string)
        .unwrap_or_else(|| unique_name("clickpipes_user"));
    let password = "s3cret pass'word".to_string();
    let publication = "clickpipes".to_string();
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
    pg.sql(
        &database,
        &format!(
            "CREATE TABLE public.customers (id bigint PRIMARY KEY, name text NOT NULL);
             CREATE TABLE public.orders (id bigint PRIMARY KEY, customer_id bigint, total numeric(12,2));
             DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {user_lit}) THEN
                 CREATE USER {user} PASSWORD {pw};
               END IF;
             END $$;
             GRANT USAGE ON SCHEMA \"public\" TO {user};
             GRANT SELECT ON ALL TABLES IN SCHEMA \"public\" TO {user};
             ALTER DEFAULT PRIVILEGES IN SCHEMA \"public\" GRANT SELECT ON TABLES TO {user};
             ALTER USER {user} WITH REPLICATION;",
            user = q(&user),
            user_lit = lit(&user),
            pw = lit(&password),
        ),
    )
    .expect("guide setup");
    let create_pub = match shape {
        PublicationShape::ForTable => {
            format!("CREATE PUBLICATION {publication} FOR TABLE public.customers, public.orders;")
        }
        PublicationShape::ForTablesInSchema => {
            format!("CREATE PUBLICATION {publication} FOR TABLES IN SCHEMA \"public\";")
        }
    };
    pg.sql(&database, &create_pub).expect("create publication");
    GuideSource {
        database,
        user,
        password,
        publication,
    }
}

/// Settings for `source` on `pg` and the shared ClickHouse, through the environment
/// exactly as a container would give them; `extra` adds or overrides variables.
pub fn settings_for(pg_url: &str, publication: &str, extra: &[(&str, &str)]) -> Settings {
    Config::load_with_env(None, env_for(pg_url, publication, extra))
        .and_then(|c| c.validate())
        .expect("valid settings")
}

/// The shared ClickHouse's socket address, for a proxy the test puts in front of it.
pub fn clickhouse_addr() -> std::net::SocketAddr {
    url::Url::parse(&ClickHouse::shared().url)
        .ok()
        .and_then(|u| u.socket_addrs(|| None).ok())
        .and_then(|a| a.into_iter().next())
        .expect("ClickHouse address")
}

/// The `PGCH__…` variables of [`settings_for`], for running the `pgch` binary.
pub fn env_for(pg_url: &str, publication: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let ch = ClickHouse::shared();
    let mut env: Vec<(String, String)> = vec![
        ("PGCH__SOURCE__URL".into(), pg_url.into()),
        ("PGCH__SOURCE__PUBLICATION".into(), publication.into()),
        ("PGCH__SOURCE__SLOT".into(), unique_name("slot")),
        ("PGCH__SOURCE__CONNECT_TIMEOUT_SECS".into(), "5".into()),
        ("PGCH__DESTINATION__URL".into(), ch.url.clone()),
        ("PGCH__DESTINATION__USER".into(), ch.user.clone()),
        ("PGCH__DESTINATION__PASSWORD".into(), ch.password.clone()),
        ("PGCH__DESTINATION__DATABASE".into(), unique_name("dest")),
        // Tests run side by side: any free port for /metrics.
        ("PGCH__METRICS__LISTEN".into(), "127.0.0.1:0".into()),
    ];
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// The environment that connects the `pgch` binary as the guide's user.
pub fn guide_env(
    pg: &PgCluster,
    src: &GuideSource,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    env_for(
        &pg.url(&src.user, Some(&src.password), &src.database),
        &src.publication,
        extra,
    )
}

/// Settings that connect as the guide's user.
pub fn guide_settings(pg: &PgCluster, src: &GuideSource, extra: &[(&str, &str)]) -> Settings {
    settings_for(
        &pg.url(&src.user, Some(&src.password), &src.database),
        &src.publication,
        extra,
    )
}
