//! Logs go to stderr (systemd's journal or the terminal), filtered by `GATEHOUSE_LOG` or
//! `RUST_LOG` (default `info`). Secrets cannot reach them: they are [`crate::secret::Secret`]s,
//! whose `Debug` is redacted.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = std::env::var("GATEHOUSE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info,sqlx=warn,async_imap=warn,lettre=warn,rustls=warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
