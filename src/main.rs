//! The `pgch` binary: parses the command line, sets up logging, then runs the command on
//! a tokio runtime.

use clap::Parser;
use pgch::cli::{Cli, Command, LogFormat, EXIT_FAILURE};
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    // `tail` is one stream into one consumer: on a single thread the reader hands its
    // batches over without cross-thread wake-ups, which halved its CPU per change
    // (benches/tail_drain.rs). Everything else gets the multi-thread runtime.
    let mut builder = if matches!(cli.command, Command::Tail { .. }) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgch: cannot start the async runtime: {e}");
            std::process::exit(EXIT_FAILURE);
        }
    };
    // The command runs as a task on the workers, not on the thread that waits for it:
    // the stream reader then wakes the apply loop on its own worker (tokio's next-task
    // slot) instead of unparking a thread of its own through a futex per handover.
    let code = runtime.block_on(async {
        match tokio::spawn(pgch::cli::execute(cli)).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("pgch: {e}");
                EXIT_FAILURE
            }
        }
    });
    std::process::exit(code);
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("PGCH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
