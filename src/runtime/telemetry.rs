//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as
//! text for people or JSON lines for machines (`--log-format json`). Text is
//! coloured only when stderr is a terminal and `NO_COLOR` is unset, so files,
//! pipes and `kubectl logs` get plain lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Whether text logs may carry colour (ANSI escapes).
pub fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber; call once, first thing.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(colour()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
