//! The command line: `pgch check`, `pgch run`, `pgch resync`, `pgch tail`. Parsing and
//! dispatch live here so tests can run a command in-process and read its exit code and
//! output.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::lsn::Lsn;
use crate::tail::{TailArgs, TailFormat};

/// Streams PostgreSQL into ClickHouse: snapshot, then CDC from a pgoutput slot.
#[derive(Debug, Parser)]
#[command(name = "pgch", version, about)]
pub struct Cli {
    /// TOML config file; every key can also come from PGCH__SECTION__KEY variables.
    #[arg(long, global = true, env = "PGCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// How `pgch tail` prints.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TailOutput {
    Json,
    None,
}

/// How `pgch check` prints its report.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the source and the destination and say what to fix (exit 1 if any check failed).
    Check {
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
    },
    /// Run the pipeline: snapshot, then stream changes.
    Run,
    /// Show where every table and the slot stand, and how a running pgch is doing
    /// (exit 0 healthy, 1 needs attention, 2 broken).
    Status {
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
    },
    /// Copy tables again into shadow tables and swap them in atomically; without --table,
    /// from a new slot (after a lost or invalidated slot, or a failover). Run it while
    /// `pgch run` is stopped; if interrupted, run it again.
    Resync {
        /// Re-copy only this published table (schema.table), keeping the slot; repeatable.
        #[arg(long = "table", value_name = "SCHEMA.TABLE")]
        tables: Vec<String>,
    },
    /// Print the changes a slot carries, one JSON line each (never confirms progress).
    Tail {
        /// Read this existing slot without ever confirming progress on it.
        #[arg(long, conflicts_with = "temporary")]
        slot: Option<String>,
        /// Create a temporary slot for this session (gone when tail exits).
        #[arg(long)]
        temporary: bool,
        /// Start at this LSN (X/Y) instead of where the slot stands.
        #[arg(long)]
        from: Option<Lsn>,
        /// Stop once the stream reaches this LSN (X/Y).
        #[arg(long)]
        endpos: Option<Lsn>,
        /// json: one line per change; none: decode and discard (for measuring).
        #[arg(long, value_enum, default_value_t = TailOutput::Json)]
        format: TailOutput,
    },
}

/// Exit code of a failed check or a fatal error.
pub const EXIT_FAILURE: i32 = 1;

/// Runs a parsed command; returns the process exit code and prints to stdout/stderr.
pub async fn execute(cli: Cli) -> i32 {
    match cli.command {
        Command::Check { format } => {
            let settings = match Config::load(cli.config.as_deref()).and_then(|c| c.validate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("pgch: {e}");
                    return EXIT_FAILURE;
                }
            };
            let report = crate::check::run(&settings).await;
            match format {
                ReportFormat::Text => print!("{}", report.render_text()),
                ReportFormat::Json => println!("{}", report.render_json()),
            }
            if report.has_failures() {
                EXIT_FAILURE
            } else {
                0
            }
        }
        Command::Run => run(cli.config.as_deref()).await,
        Command::Status { format } => status(cli.config.as_deref(), format).await,
        Command::Resync { tables } => resync(cli.config.as_deref(), &tables).await,
        Command::Tail {
            slot,
            temporary,
            from,
            endpos,
            format,
        } => {
            let args = TailArgs {
                slot,
                temporary,
                from,
                endpos,
                format: match format {
                    TailOutput::Json => TailFormat::Json,
                    TailOutput::None => TailFormat::None,
                },
            };
            tail(cli.config.as_deref(), &args).await
        }
    }
}

/// `pgch status`: reads, never changes anything; broken when the config is unreadable.
async fn status(config: Option<&std::path::Path>, format: ReportFormat) -> i32 {
    use crate::status::{self, HealthSource, Level};
    let settings = match Config::load(config).and_then(|c| c.validate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pgch: {e}");
            return Level::Broken.exit_code();
        }
    };
    let endpoint = status::collect::reachable(settings.metrics.listen);
    let report = status::collect(&settings, HealthSource::Endpoint(endpoint)).await;
    match format {
        ReportFormat::Text => print!("{}", status::render::text(&report)),
        ReportFormat::Json => println!("{}", status::render::json(&report)),
    }
    report.level.unwrap_or(Level::Broken).exit_code()
}

async fn run(config: Option<&std::path::Path>) -> i32 {
    use crate::metrics::health::{self, Phase};
    let settings = match Config::load(config).and_then(|c| c.validate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pgch: {e}");
            return EXIT_FAILURE;
        }
    };
    if let Some(code) = refuse_a_wrong_setup("pgch run", &settings).await {
        return code;
    }
    health::set_ready_phase(if settings.mode.streams() {
        Phase::Streaming
    } else {
        Phase::Snapshotting
    });
    health::set_phase(Phase::Starting);
    // The endpoint and the slot poller start first: a stuck start-up or a long snapshot
    // is exactly when an operator looks at them.
    let server = match crate::metrics::http::Server::bind(settings.metrics.listen).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pgch run: {e}");
            return EXIT_FAILURE;
        }
    };
    let server = server.with_status(crate::status::page::Page::new(settings.clone()));
    tracing::info!(listen = %settings.metrics.listen, "serving the status page at /, /metrics, /healthz, /readyz");
    let _server = AbortOnDrop(server.spawn());
    let _poller = settings
        .mode
        .streams()
        .then(|| AbortOnDrop(crate::metrics::slot::spawn(&settings)));
    let _standby_watcher = settings
        .mode
        .streams()
        .then(|| crate::metrics::standby_slots::spawn(&settings).map(AbortOnDrop));
    let signal = shutdown_signal();
    let shutdown = async move {
        signal.await;
        health::set_phase(Phase::Stopping);
    };
    if settings.mode != crate::config::Mode::SnapshotOnly {
        return match crate::cdc::run_resyncing(&settings, shutdown).await {
            Ok(()) => 0,
            Err(e) => match e.classify() {
                crate::error::Class::Fatal { fix } if !fix.is_empty() => {
                    fatal(&format!("{e}\n  fix: {fix}"))
                }
                _ => fatal(&e),
            },
        };
    }
    health::set_phase(Phase::Snapshotting);
    let started = std::time::Instant::now();
    let opts = match crate::snapshot::SnapshotOptions::for_destination(&settings).await {
        Ok(opts) => opts,
        Err(e) => return fatal(&format!("asking ClickHouse what it can hold: {e}")),
    };
    match crate::snapshot::run(&settings, &opts).await {
        Ok(report) => {
            let load =
                |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            let metrics = crate::metrics::global();
            for (table, p) in &report.tables {
                metrics.snapshot_progress(table, load(&p.rows_copied), load(&p.rows_estimated));
            }
            let rows: u64 = report.tables.values().map(|p| load(&p.rows_copied)).sum();
            health::set_phase(Phase::Stopping);
            tracing::info!(
                tables = report.tables.len(),
                rows,
                partitions_copied = report.partitions_copied,
                partitions_already_done = report.partitions_skipped,
                tables_already_copied = report.tables_already_copied,
                seconds = %format!("{:.1}", started.elapsed().as_secs_f64()),
                "snapshot complete"
            );
            0
        }
        Err(e) => fatal(&e),
    }
}

/// Runs the checks before anything is created, and refuses to start (an exit code) when
/// one of [`crate::check::FATAL_AT_START`] failed: a typo must not leave a slot behind.
async fn refuse_a_wrong_setup(command: &str, settings: &crate::config::Settings) -> Option<i32> {
    let report = crate::check::run(settings).await;
    let blockers = report.start_blockers();
    if blockers.is_empty() {
        return None;
    }
    eprint!("{command}: {}", crate::check::render_blockers(&blockers));
    Some(EXIT_FAILURE)
}

/// Records a fatal error for `/readyz` and `/healthz`, prints it, and returns the exit code.
fn fatal(e: &dyn std::fmt::Display) -> i32 {
    crate::metrics::health::set_fatal(e.to_string());
    crate::metrics::global().error("fatal");
    eprintln!("pgch run: {e}");
    EXIT_FAILURE
}

/// Aborts a background task (metrics endpoint, slot poller) when `run` returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves on SIGTERM or SIGINT: the pipeline then drains, flushes and acknowledges.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered now, not at the first poll: a SIGTERM during start-up (slot, catalog)
    // is then a graceful stop once the pipeline looks, never the default "terminate".
    let term = signal(SignalKind::terminate()).ok();
    let int = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(term) => {}
            _ = wait(int) => {}
        }
        tracing::info!("shutdown requested: flushing and acknowledging");
    }
}

async fn resync(config: Option<&std::path::Path>, tables: &[String]) -> i32 {
    let settings = match Config::load(config).and_then(|c| c.validate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pgch: {e}");
            return EXIT_FAILURE;
        }
    };
    if let Some(code) = refuse_a_wrong_setup("pgch resync", &settings).await {
        return code;
    }
    let started = std::time::Instant::now();
    match crate::resync::run(&settings, tables).await {
        Ok(report) => {
            let rows: u64 = report.tables.iter().map(|t| t.rows).sum();
            let secs = started.elapsed().as_secs_f64().max(1e-6);
            tracing::info!(
                tables = report.tables.len(),
                already_done = report.already_done,
                rows,
                seconds = %format!("{secs:.1}"),
                rows_per_sec = %format!("{:.0}", rows as f64 / secs),
                new_slot = report.new_slot.is_some(),
                "resync complete: start `pgch run` to stream from the slot"
            );
            0
        }
        Err(e) => {
            eprintln!("pgch resync: {e}");
            EXIT_FAILURE
        }
    }
}

async fn tail(config: Option<&std::path::Path>, args: &TailArgs) -> i32 {
    let source = match Config::load(config).and_then(|c| c.validate_source()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pgch: {e}");
            return EXIT_FAILURE;
        }
    };
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, std::io::stdout());
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match crate::tail::run(&source, args, &mut out, stop).await {
        Ok(stats) => {
            let secs = stats.elapsed.as_secs_f64().max(1e-9);
            tracing::info!(
                changes = stats.changes,
                transactions = stats.transactions,
                payload_bytes = stats.payload_bytes,
                seconds = %format!("{secs:.3}"),
                changes_per_sec = %format!("{:.0}", stats.changes as f64 / secs),
                "tail finished"
            );
            0
        }
        Err(e) => {
            eprintln!("pgch tail: {e}");
            EXIT_FAILURE
        }
    }
}
