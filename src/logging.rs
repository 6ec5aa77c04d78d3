//! Logs go to stderr (systemd's journal or the terminal), filtered by `GATEHOUSE_LOG` or
//! `RUST_LOG` (default `info`), as text or, with `GATEHOUSE_LOG_FORMAT=json`, one JSON
//! object per line for a log shipper. Secrets cannot reach them in either format: they are
//! [`crate::secret::Secret`]s, whose `Debug` is redacted, and the protocol libraries' own
//! debug and trace output (which echoes LOGIN and AUTH commands, passwords included, and
//! whatever a proxy URL carries) is capped whatever the filter says.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

/// Crates whose verbose output contains credentials: never below `info`.
const WIRE_LEVEL_CRATES: &[&str] = &["async_imap", "imap_proto", "lettre", "reqwest", "hyper", "hyper_util"];

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line of text per event; coloured on a terminal.
    Text,
    /// One JSON object per line: `timestamp` (RFC 3339, UTC), `level`, `target`, `message`
    /// and the event's other fields.
    Json,
}

impl Format {
    /// `GATEHOUSE_LOG_FORMAT`'s value: `json`, or `text` (also when unset). Anything else is
    /// `Err` with the value, and text is used.
    pub fn parse(value: Option<&str>) -> Result<Format, String> {
        match value.map(str::trim) {
            None | Some("") => Ok(Format::Text),
            Some(v) if v.eq_ignore_ascii_case("text") => Ok(Format::Text),
            Some(v) if v.eq_ignore_ascii_case("json") => Ok(Format::Json),
            Some(v) => Err(v.to_string()),
        }
    }
}

/// Sets up the log for the process, as `GATEHOUSE_LOG`/`RUST_LOG` and `GATEHOUSE_LOG_FORMAT` say.
pub fn init() {
    let requested = std::env::var("GATEHOUSE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info,sqlx=warn,rustls=warn".into());
    let format = Format::parse(std::env::var("GATEHOUSE_LOG_FORMAT").ok().as_deref());
    let builder = tracing_subscriber::fmt().with_env_filter(filter(&requested)).with_writer(std::io::stderr);
    match format {
        Ok(Format::Json) => {
            let _ = builder.json().flatten_event(true).with_current_span(false).try_init();
        }
        Ok(Format::Text) | Err(_) => {
            let _ = builder.with_ansi(std::io::stderr().is_terminal()).with_target(false).try_init();
        }
    }
    if let Err(value) = format {
        tracing::warn!("GATEHOUSE_LOG_FORMAT={value:?} is neither \"text\" nor \"json\": logging text");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_is_json_or_text() {
        assert_eq!(Format::parse(None), Ok(Format::Text));
        assert_eq!(Format::parse(Some("JSON")), Ok(Format::Json));
        assert_eq!(Format::parse(Some(" text ")), Ok(Format::Text));
        assert_eq!(Format::parse(Some("yaml")), Err("yaml".to_string()));
    }
}
