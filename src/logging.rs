//! Logs go to stderr (systemd's journal or the terminal), filtered by `GATEHOUSE_LOG` or
//! `RUST_LOG` (default `info`). Secrets cannot reach them: they are [`crate::secret::Secret`]s,
//! whose `Debug` is redacted, and the protocol libraries' own debug and trace output (which
//! echoes LOGIN and AUTH commands, passwords included) is capped whatever the filter says.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

/// Crates whose verbose output contains credentials: never below `info`.
const WIRE_LEVEL_CRATES: &[&str] = &["async_imap", "imap_proto", "lettre"];

pub fn init() {
    let requested = std::env::var("GATEHOUSE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info,sqlx=warn,rustls=warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(&requested))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// The operator's filter with the wire-level crates capped at `info`.
pub fn filter(requested: &str) -> EnvFilter {
    let mut filter = EnvFilter::new(requested);
    for krate in WIRE_LEVEL_CRATES {
        if let Ok(directive) = format!("{krate}=info").parse::<Directive>() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}
