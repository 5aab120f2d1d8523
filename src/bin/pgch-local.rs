//! `pgch-local`: brings up a private Postgres (sample schema, and a user and publication
//! set up exactly as the ClickPipes guide says) and a ClickHouse endpoint, then runs
//! pgch against them — `pgch check`, then the snapshot — so a newcomer sees pgch work
//! with one command. The servers stay up
//! until Ctrl-C (or exit at once with `--once`), and are removed afterwards.

use std::time::Duration;

use pgch::check;
use pgch::config::Config;
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::{PgCluster, PgOptions};

const DATABASE: &str = "shop";
const USER: &str = "clickpipes_user";
const PASSWORD: &str = "clickpipes-password";
const PUBLICATION: &str = "clickpipes";

const SAMPLE_SCHEMA: &str = "
CREATE TABLE public.customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    email text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES public.customers (id),
    total numeric(12,2) NOT NULL,
    status text NOT NULL DEFAULT 'new',
    placed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO public.customers (name, email)
SELECT 'customer ' || i, 'c' || i || '@example.com' FROM generate_series(1, 1000) AS i;
INSERT INTO public.orders (customer_id, total, status)
SELECT 1 + (i % 1000), round((random() * 500)::numeric, 2), (ARRAY['new','paid','shipped'])[1 + i % 3]
FROM generate_series(1, 10000) AS i;
";

/// The setup from the ClickPipes / PlanetScale guide, verbatim in spirit.
fn guide_setup() -> String {
    format!(
        "CREATE USER {USER} PASSWORD '{PASSWORD}';
GRANT USAGE ON SCHEMA \"public\" TO {USER};
GRANT SELECT ON ALL TABLES IN SCHEMA \"public\" TO {USER};
ALTER DEFAULT PRIVILEGES IN SCHEMA \"public\" GRANT SELECT ON TABLES TO {USER};
ALTER USER {USER} WITH REPLICATION;
CREATE PUBLICATION {PUBLICATION} FOR TABLE public.customers, public.orders;"
    )
}

fn main() {
    let once = std::env::args().any(|a| a == "--once");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgch-local: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(run(once));
    std::process::exit(code);
}

async fn run(once: bool) -> i32 {
    match start_and_check(once).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pgch-local: {e}");
            1
        }
    }
}

async fn start_and_check(once: bool) -> Result<i32, String> {
    eprintln!("pgch-local: starting Postgres (wal_level = logical) ...");
    let pg = PgCluster::start(PgOptions::default().setting("max_slot_wal_keep_size", "'16GB'"))?;
    pg.sql("postgres", &format!("CREATE DATABASE {DATABASE}"))?;
    pg.sql(DATABASE, SAMPLE_SCHEMA)?;
    pg.sql(DATABASE, &guide_setup())?;
    eprintln!("pgch-local: starting ClickHouse ...");
    let ch = ClickHouse::from_env_or_start()?;
    let source_url = pg.url(USER, Some(PASSWORD), DATABASE);
    let env = vec![
        ("PGCH__SOURCE__URL".to_string(), source_url.clone()),
        (
            "PGCH__SOURCE__PUBLICATION".to_string(),
            PUBLICATION.to_string(),
        ),
        ("PGCH__DESTINATION__URL".to_string(), ch.url.clone()),
        ("PGCH__DESTINATION__USER".to_string(), ch.user.clone()),
        (
            "PGCH__DESTINATION__PASSWORD".to_string(),
            ch.password.clone(),
        ),
    ];
    let settings = Config::load_with_env(None, env)
        .and_then(|c| c.validate())
        .map_err(|e| e.to_string())?;
    println!("\n$ pgch check\n");
    let report = check::run(&settings).await;
    print!("{}", report.render_text());
    println!(
        "\nSource:      {}\n             (superuser: {})\nClickHouse:  {}\n\n\
         Try it yourself:\n  PGCH__SOURCE__URL='{}' PGCH__SOURCE__PUBLICATION={PUBLICATION} \\\n  \
         PGCH__DESTINATION__URL={} cargo run -- check\n",
        pgch::config::redact_url(&source_url),
        pg.superuser_url(DATABASE),
        ch.url,
        source_url,
        ch.url
    );
    let mut code = i32::from(report.has_failures());
    if code == 0 {
        println!("\n$ PGCH__PIPELINE__MODE=snapshot_only pgch run\n");
        let mut snapshot_settings = settings.clone();
        snapshot_settings.mode = pgch::config::Mode::SnapshotOnly;
        let opts = pgch::snapshot::SnapshotOptions::from_settings(&snapshot_settings);
        match pgch::snapshot::run(&snapshot_settings, &opts).await {
            Ok(_) => {
                let db = &settings.destination.database;
                let counts = ch
                    .query(&format!(
                        "SELECT name, total_rows FROM system.tables WHERE database = '{db}' ORDER BY name"
                    ))
                    .await?;
                println!("ClickHouse now holds (database {db}):\n{counts}");
                println!(
                    "Query it: curl '{}/?query=SELECT+*+FROM+{db}.public_orders+FINAL+LIMIT+5'",
                    ch.url
                );
            }
            Err(e) => {
                println!("snapshot failed: {e}");
                code = 1;
            }
        }
    }
    if once || std::env::var("CI").is_ok() {
        return Ok(code);
    }
    println!("The servers stay up until Ctrl-C.");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
    eprintln!("pgch-local: stopping and removing the servers");
    Ok(code)
}
