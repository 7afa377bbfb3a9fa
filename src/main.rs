//! The `perfproxy` binary: parse the configuration (exit 2 when it is bad),
//! set up logging, bind, serve until SIGTERM/SIGINT, drain, exit 0.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use perfproxy::config::{self, Command, LoadError};
use perfproxy::runtime::server::{self, Listeners};
use tracing::error;

fn main() -> ExitCode {
    let invocation = match config::from_args(std::env::args_os()) {
        Ok(inv) => inv,
        Err(e) => match *e {
            LoadError::Usage(e) => e.exit(),
            LoadError::Invalid(e) => {
                eprintln!("perfproxy: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let config = invocation.config;
    match invocation.command {
        Some(Command::CheckConfig) => {
            print!("{}", config.effective_toml());
            eprintln!("perfproxy: configuration is valid");
            return ExitCode::SUCCESS;
        }
        Some(Command::Migrate) => return migrate(&config),
        Some(Command::SloRules) => {
            let (objectives, rows) = &config.slos;
            print!("{}", perfproxy::observe::slo::rules::prometheus_rules(objectives, rows));
            return ExitCode::SUCCESS;
        }
        None => {}
    }
    perfproxy::runtime::telemetry::init(invocation.log_format);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the control runtime can be built at start-up");
    runtime.block_on(async move {
        let listeners = match Listeners::bind(&config) {
            Ok(l) => l,
            Err(e) => {
                error!(error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        match server::run(listeners, config, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// `perfproxy migrate`: exit 0 when applied (or nothing to do), 1 on a
/// database error, 2 without a database URL.
fn migrate(config: &perfproxy::config::Config) -> ExitCode {
    let Some(url) = config.settings.database_url.clone() else {
        eprintln!(
            "perfproxy: invalid configuration: DATABASE_URL (--database-url) = unset: expected the database to migrate"
        );
        return ExitCode::from(2);
    };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime can be built at start-up");
    match runtime.block_on(perfproxy::watch::database::migrate::run(&url)) {
        Ok(applied) if applied.is_empty() => {
            println!("perfproxy: migrations up to date");
            ExitCode::SUCCESS
        }
        Ok(applied) => {
            for version in applied {
                println!("perfproxy: applied {version}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("perfproxy: migrate failed: {}", perfproxy::redact::text(&e.describe()));
            ExitCode::FAILURE
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT, saying which.
async fn shutdown_signal() -> server::Stop {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler can be installed");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler can be installed");
    tokio::select! {
        _ = term.recv() => server::Stop::Term,
        _ = int.recv() => server::Stop::Interrupt,
    }
}
