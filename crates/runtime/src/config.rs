//! Configuration loading: defaults → TOML file (`--config`) → environment
//! variables prefixed `SWITCHBOARD_` with `__` for nesting, the environment
//! winning. Only the binary calls this; libraries take typed structs.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::{self, DeserializeOwned, Unexpected};
use serde::{Deserialize, Deserializer};

/// The environment prefix.
pub const ENV_PREFIX: &str = "SWITCHBOARD_";

/// Every problem found in the configuration, reported at once.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    /// One line per problem.
    pub problems: Vec<String>,
}

/// A configuration that can check itself after extraction.
pub trait Validate {
    /// Pushes one line per problem into `problems`.
    fn validate(&self, problems: &mut Vec<String>);
}

/// A secret string (a password, token or seed): its `Debug` never shows
/// it, and a value of the wrong type is refused without echoing it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `s`.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<redacted>")
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            // The default errors would print the value.
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::invalid_type(Unexpected::Other("a boolean (value not shown)"), &self))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::invalid_type(Unexpected::Other("a number (value not shown)"), &self))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::invalid_type(Unexpected::Other("a number (value not shown)"), &self))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::invalid_type(Unexpected::Other("a number (value not shown)"), &self))
            }
        }
        d.deserialize_string(V)
    }
}

/// Loads `T` from defaults, the TOML file at `path` (which must exist when
/// given) and the environment.
///
/// Only `SWITCHBOARD_*` variables whose first segment is one of `roots`
/// are read: others (a script's `SWITCHBOARD_BIN`, the
/// `SWITCHBOARD_SERVICE_HOST` Kubernetes injects for a Service named
/// `switchboard`) are not configuration. Unknown keys inside a root are
/// still errors.
///
/// Variables for the dotted keys in `raw` (secrets) are taken as written:
/// figment would read `0123` as the number 123 and `[x]` as an array.
///
/// # Errors
/// [`ConfigError`] listing every extraction and validation problem.
pub fn load<T: DeserializeOwned + Validate>(
    path: Option<&Path>,
    roots: &'static [&'static str],
    raw: &'static [&'static str],
) -> Result<T, ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = path {
        if !path.is_file() {
            return Err(ConfigError {
                problems: vec![format!("config file {} does not exist", path.display())],
            });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    let is_raw = move |key: &str| raw.iter().any(|r| r.eq_ignore_ascii_case(key));
    figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__").filter(move |key| {
        let root = key.as_str().split('.').next().unwrap_or_default();
        roots.iter().any(|r| r.eq_ignore_ascii_case(root)) && !is_raw(key.as_str())
    }));
    for (name, value) in std::env::vars_os() {
        let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
            continue;
        };
        let Some(key) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = key.replace("__", ".").to_lowercase();
        if is_raw(&key) {
            figment = figment.merge(Serialized::default(&key, value));
        }
    }
    let config: T = figment.extract().map_err(|e| ConfigError {
        problems: e.into_iter().map(|e| describe(&e)).collect(),
    })?;
    let mut problems = Vec::new();
    config.validate(&mut problems);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { problems })
    }
}

/// `edge.heartbeat: invalid value ... (from <source>)`, keys in the case
/// the file uses.
fn describe(e: &figment::Error) -> String {
    let key = e.path.join(".").to_lowercase();
    let source = e
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(src) => format!(" (from {src})"),
            None => format!(" (from {})", m.name),
        })
        .unwrap_or_default();
    let kind = without_source_lines(&e.kind.to_string());
    if key.is_empty() {
        format!("{kind}{source}")
    } else {
        format!("{key}: {kind}{source}")
    }
}

/// A TOML parse error quotes the offending line (`2 | password = "…`),
/// which may hold a secret: keep the position and the reason only.
fn without_source_lines(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let t = l.trim_start();
            let t = t.trim_start_matches(|c: char| c.is_ascii_digit());
            !(t.starts_with('|') || t.starts_with(" |"))
        })
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Accept queue (`listen(2)` backlog) of a listening socket when none is
/// configured: 4096, what Go asks for (`net.core.somaxconn`, 4096 on
/// Linux ≥ 5.4). Rust's default of 128 overflows when hundreds of clients
/// reconnect at once (an edge died), and 1024 still overflowed in 3 of 11
/// 10k-client storms: every handshake the kernel drops waits a full second
/// for the client's SYN retry. The kernel caps the value at
/// `net.core.somaxconn`.
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;

/// Largest `listen_backlog` accepted (the kernel field is 16 bits on older
/// kernels; `net.core.somaxconn` caps it anyway).
pub const MAX_LISTEN_BACKLOG: u32 = 65535;

/// Pushes a problem when the `listen_backlog` at `key` is out of range.
pub fn validate_listen_backlog(key: &str, backlog: u32, problems: &mut Vec<String>) {
    if !(1..=MAX_LISTEN_BACKLOG).contains(&backlog) {
        problems.push(format!("{key} must be between 1 and {MAX_LISTEN_BACKLOG}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::time::Duration;

    #[derive(Debug, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        port: u16,
        #[serde(with = "humantime_serde")]
        wait: Duration,
    }
    impl Default for Demo {
        fn default() -> Self {
            Self {
                port: 1,
                wait: Duration::from_secs(1),
            }
        }
    }
    impl Validate for Demo {
        fn validate(&self, problems: &mut Vec<String>) {
            if self.port == 0 {
                problems.push("port must not be 0".into());
            }
        }
    }

    #[test]
    fn file_then_validation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "port = 7\nwait = \"250ms\"\n").expect("write");
        let d: Demo = load(Some(&path), &["port", "wait"], &[]).expect("valid");
        assert_eq!(d.port, 7);
        assert_eq!(d.wait, Duration::from_millis(250));

        std::fs::write(&path, "port = 0\n").expect("write");
        let e = load::<Demo>(Some(&path), &["port", "wait"], &[]).expect_err("invalid");
        assert_eq!(e.problems, vec!["port must not be 0".to_owned()]);

        std::fs::write(&path, "port = \"x\"\nbogus = 1\n").expect("write");
        let e = load::<Demo>(Some(&path), &["port", "wait"], &[]).expect_err("invalid");
        assert!(!e.problems.is_empty());

        std::fs::write(&path, "port = 7\nwait = \"hunter2-secret\" \"x\"\n").expect("write");
        let e = load::<Demo>(Some(&path), &["port", "wait"], &[]).expect_err("syntax");
        let all = e.problems.join("\n");
        assert!(all.contains("line 2"), "{all}");
        assert!(!all.contains("hunter2"), "a parse error quotes the secret: {all}");

        let e = load::<Demo>(Some(&dir.path().join("missing.toml")), &[], &[]).expect_err("missing");
        assert!(e.problems[0].contains("does not exist"));
    }
}
