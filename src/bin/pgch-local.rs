//! `pgch-local`: brings up a private Postgres (sample schema, and a user and publication
//! set up exactly as the ClickPipes guide says) and a ClickHouse endpoint, then runs
//! pgch against them — `pgch check`, then `pgch run` (snapshot, then streaming) while a
//! small live workload writes — so a newcomer watches rows arrive in ClickHouse. It runs
//! until Ctrl-C (`--once`, or CI: 8 seconds), then removes the servers.

use std::time::Duration;

use pgch::check;
use pgch::config::Config;
use pgch::testkit::clickhouse::ClickHouse;
use pgch::testkit::postgres::{PgCluster, PgOptions};

const DATABASE: &str = "shop";
/// The user and password the setup script creates.
const USER: &str = "clickpipes_user";
const PASSWORD: &str = "clickpipes-password";
const PUBLICATION: &str = "clickpipes";

/// The sample schema, then a user and publication exactly as the ClickPipes guide says;
/// the same script the docker-compose Postgres runs at its first start.
const SOURCE_SETUP: &str = include_str!("../../config/docker-compose/postgres-init.sql");

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
    pg.sql(DATABASE, SOURCE_SETUP)?;
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
    let checking = std::time::Instant::now();
    let report = check::run(&settings).await;
    print!("{}", report.render_text());
    // The same checks gate every `pgch run` and `pgch resync`: this is what they add.
    println!(
        "(the checks took {:.2} s; pgch run runs them before it changes anything)",
        checking.elapsed().as_secs_f64()
    );
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
    if report.has_failures() {
        return Ok(1);
    }
    println!(
        "\n$ pgch run      (snapshot, then streaming; a live workload writes to the source)\n"
    );
    let stop_after = if once || std::env::var("CI").is_ok() {
        Some(Duration::from_secs(8))
    } else {
        None
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let pipeline = {
        let settings = settings.clone();
        tokio::spawn(async move {
            pgch::cdc::run(&settings, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    let db = settings.destination.database.clone();
    let started = std::time::Instant::now();
    let mut tick = 0u64;
    let code = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break 0,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        if pipeline.is_finished() {
            break 1;
        }
        tick += 1;
        // The live workload: a new order, a status change, now and then a delete.
        let workload = format!(
            "INSERT INTO public.orders (customer_id, total) VALUES ({c}, {t});
             UPDATE public.orders SET status = 'paid' WHERE id = {u};
             DELETE FROM public.orders WHERE id = {d} AND {tick} % 5 = 0;",
            c = 1 + tick % 1000,
            t = tick % 500,
            u = 1 + (tick * 7) % 10_000,
            d = 1 + (tick * 13) % 10_000,
        );
        pg.sql(DATABASE, &workload)?;
        if tick.is_multiple_of(4) {
            let pg_count = pg.sql(DATABASE, "SELECT count(*) FROM public.orders")?;
            let ch_count = ch
                .query(&format!(
                    "SELECT count() FROM `{db}`.`public_orders` FINAL WHERE _is_deleted = 0"
                ))
                .await
                .unwrap_or_default();
            println!(
                "orders: Postgres {:>6}   ClickHouse {:>6}",
                pg_count.trim(),
                ch_count.trim()
            );
        }
        if stop_after.is_some_and(|d| started.elapsed() >= d) {
            break 0;
        }
    };
    let _ = stop_tx.send(());
    let code = match pipeline.await {
        Ok(Ok(())) => code,
        Ok(Err(e)) => {
            println!("pgch run failed: {e}");
            1
        }
        Err(e) => {
            println!("pgch run panicked: {e}");
            1
        }
    };
    println!(
        "\nQuery it: curl '{}/?query=SELECT+*+FROM+{db}.public_orders+FINAL+WHERE+_is_deleted=0+LIMIT+5'",
        ch.url
    );
    eprintln!("pgch-local: stopping and removing the servers");
    Ok(code)
}
