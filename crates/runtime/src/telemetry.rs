//! tracing initialisation. Log fields have one name everywhere: `conn_id`,
//! `node_id`, `biz`, `client_id`, `error`.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]` configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`. Default `text`.
    pub format: LogFormat,
    /// A tracing filter (`info`, `switchboard_edge=debug,info`). `RUST_LOG`
    /// wins when set. Default `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// `filter` with the NATS client's own lines at `warn`, unless the filter
/// names `async_nats`: it logs every event and every failed connection
/// attempt (every 2 s while NATS refuses us), which our link log already
/// says once, rate-limited (`switchboard_runtime::nats`).
fn with_quiet_nats_client(filter: &str) -> String {
    if filter.contains("async_nats") {
        filter.to_owned()
    } else {
        format!("{filter},async_nats=warn,async_nats::connector=off")
    }
}

/// Installs the global subscriber; a second call is a no-op.
pub fn init(config: &LogConfig) {
    let wanted = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.trim().is_empty())
        .unwrap_or_else(|| config.level.clone());
    let filter = EnvFilter::try_new(with_quiet_nats_client(&wanted)).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nats_client_is_quiet_unless_asked() {
        assert_eq!(
            with_quiet_nats_client("info"),
            "info,async_nats=warn,async_nats::connector=off"
        );
        assert_eq!(
            with_quiet_nats_client("debug,async_nats=trace"),
            "debug,async_nats=trace"
        );
        assert!(EnvFilter::try_new(with_quiet_nats_client("switchboard_edge=debug,info")).is_ok());
    }
}
