//! `[router]` configuration.

use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Unexpected};
use serde::{Deserialize, Deserializer};
use switchboard_protocol::ids::{self, IdKind};

/// Who gets presence notices (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NoticeScope {
    /// No notices.
    Off,
    /// The other members of each of the client's groups (default).
    #[default]
    Groups,
    /// Every other client of the bizCode.
    Biz,
}

/// Shortest accepted API key.
pub const MIN_KEY_LEN: usize = 16;

/// `[api]`: the backend HTTP push API.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Require `Authorization: Bearer <key>` on every API call. Turning it
    /// off is an explicit choice. Default true.
    pub auth: bool,
    /// Accepted API keys, each a string (global) or a table
    /// `{ key, biz_codes }` (scoped to those bizCodes; any other gets 403);
    /// `SWITCHBOARD_API_KEY` adds one global key. Default none
    /// (`standalone` then generates a global one and prints it at start-up).
    #[serde(deserialize_with = "deserialize_keys")]
    pub keys: Vec<ApiKey>,
    /// Largest request body; larger is refused with 413 before it is read
    /// whole. Default 1048576 (1 MiB).
    pub max_body_bytes: usize,
    /// Most clientIds in one `send_to_clients`. Default 1000.
    pub max_clients_per_send: usize,
    /// Require bizCodes to be registered (`register`) before clients of
    /// them connect or the API serves them (else 1007). Default false.
    pub require_registration: bool,
    /// API calls per second per API key and bizCode, on each router (a
    /// token bucket; past it 429/1005 with `Retry-After`). 0 turns the
    /// limit off. Default 1000.
    pub rate_per_sec: u32,
    /// Calls allowed at once above `rate_per_sec`. Default 2000.
    pub rate_burst: u32,
    /// Most API sends with `ackTimeoutMs` waiting for their receipts at
    /// once on this process; past it 429/1005 with `Retry-After`. Default
    /// 10000.
    pub max_receipt_waits: usize,
    /// Most API sends with `ackTimeoutMs` waiting at once per API key on
    /// this process; past it 429/1005. Default 1000.
    pub max_receipt_waits_per_key: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            auth: true,
            keys: Vec::new(),
            max_body_bytes: 1024 * 1024,
            max_clients_per_send: 1000,
            require_registration: false,
            rate_per_sec: 1000,
            rate_burst: 2000,
            max_receipt_waits: 10_000,
            max_receipt_waits_per_key: 1_000,
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("auth", &self.auth)
            .field(
                "keys",
                &format_args!(
                    "[{} redacted, {} scoped]",
                    self.keys.len(),
                    self.keys.iter().filter(|k| k.biz_codes.is_some()).count()
                ),
            )
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_clients_per_send", &self.max_clients_per_send)
            .field("require_registration", &self.require_registration)
            .field("rate_per_sec", &self.rate_per_sec)
            .field("rate_burst", &self.rate_burst)
            .field("max_receipt_waits", &self.max_receipt_waits)
            .field("max_receipt_waits_per_key", &self.max_receipt_waits_per_key)
            .finish()
    }
}

impl ApiConfig {
    /// Pushes configuration problems.
    pub fn validate(&self, problems: &mut Vec<String>) {
        for (i, k) in self.keys.iter().enumerate() {
            if k.key.len() < MIN_KEY_LEN {
                problems.push(format!(
                    "api.keys[{i}]: a key must be at least {MIN_KEY_LEN} characters"
                ));
            }
            if let Some(codes) = &k.biz_codes {
                if codes.is_empty() {
                    problems.push(format!(
                        "api.keys[{i}]: a scoped key needs at least one bizCode in biz_codes \
                         (a global key is a plain string)"
                    ));
                }
                for c in codes {
                    if let Err(e) = ids::validate(IdKind::Biz, c) {
                        problems.push(format!("api.keys[{i}].biz_codes: {c:?}: {e}"));
                    }
                }
            }
            if let Some(j) = self.keys[..i].iter().position(|o| o.key == k.key) {
                problems.push(format!(
                    "api.keys[{i}]: the same key as api.keys[{j}] (list each key once)"
                ));
            }
        }
        if self.max_body_bytes < 1024 {
            problems.push("api.max_body_bytes must be at least 1024".into());
        }
        if self.max_clients_per_send == 0 {
            problems.push("api.max_clients_per_send must be positive".into());
        }
        if self.max_receipt_waits == 0 || self.max_receipt_waits_per_key == 0 {
            problems.push("api.max_receipt_waits and api.max_receipt_waits_per_key must be positive".into());
        }
        if self.rate_per_sec > 0 && self.rate_burst == 0 {
            problems.push("api.rate_burst must be positive when api.rate_per_sec is on (above 0)".into());
        }
    }
}

/// One accepted API key and the bizCodes it may serve.
///
/// In the configuration a key is either a string (a global key: every
/// bizCode, and `register` of any bizCode; for operators) or a table
/// `{ key = "...", biz_codes = ["shop", "chat"] }` (a key scoped to those
/// bizCodes: any other gets 403). `Debug` never shows the key, and a value
/// of the wrong type is refused without echoing it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The secret the caller presents as `Authorization: Bearer <key>`.
    key: String,
    /// `None`: global. `Some`: only these bizCodes.
    biz_codes: Option<Vec<String>>,
}

impl ApiKey {
    /// A key for every bizCode.
    pub fn global(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            biz_codes: None,
        }
    }

    /// A key for the bizCodes `biz_codes` only.
    pub fn scoped(key: impl Into<String>, biz_codes: Vec<String>) -> Self {
        Self {
            key: key.into(),
            biz_codes: Some(biz_codes),
        }
    }

    /// The secret itself, for the one comparison that uses it.
    pub fn secret(&self) -> &[u8] {
        self.key.as_bytes()
    }

    /// Whether the key may serve `biz` (a global key serves every bizCode).
    pub fn allows(&self, biz: &str) -> bool {
        self.biz_codes
            .as_ref()
            .is_none_or(|codes| codes.iter().any(|c| c == biz))
    }

    /// The bizCodes of a scoped key; `None` for a global key.
    pub fn biz_codes(&self) -> Option<&[String]> {
        self.biz_codes.as_deref()
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.biz_codes {
            None => f.write_str("ApiKey(<redacted>, global)"),
            Some(codes) => write!(f, "ApiKey(<redacted>, biz_codes: {codes:?})"),
        }
    }
}

/// Refuses a value of the wrong type without printing it (it may be a key).
fn not_shown<E: de::Error>(what: &'static str, exp: &dyn de::Expected) -> E {
    E::invalid_type(Unexpected::Other(what), exp)
}

/// The `key` of a key table: a string, never echoed in an error.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an API key (a string)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<KeyText, E> {
                Err(not_shown("a boolean (value not shown)", &self))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<KeyText, E> {
                Err(not_shown("a number (value not shown)", &self))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<KeyText, E> {
                Err(not_shown("a number (value not shown)", &self))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<KeyText, E> {
                Err(not_shown("a number (value not shown)", &self))
            }
        }
        d.deserialize_string(V)
    }
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = ApiKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"an API key: a string (global) or a table { key = "...", biz_codes = [...] }"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ApiKey, E> {
                Ok(ApiKey::global(v))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<ApiKey, A::Error> {
                let mut key: Option<KeyText> = None;
                let mut biz_codes: Option<Vec<String>> = None;
                while let Some(field) = map.next_key::<String>()? {
                    match field.as_str() {
                        "key" if key.is_none() => key = Some(map.next_value()?),
                        "biz_codes" if biz_codes.is_none() => biz_codes = Some(map.next_value()?),
                        "key" | "biz_codes" => return Err(de::Error::custom(format!("{field} given twice"))),
                        other => return Err(de::Error::unknown_field(other, &["key", "biz_codes"])),
                    }
                }
                let key = key.ok_or_else(|| de::Error::missing_field("key"))?;
                let biz_codes = biz_codes
                    .ok_or_else(|| de::Error::custom("a key table needs biz_codes (a global key is a plain string)"))?;
                Ok(ApiKey::scoped(key.0, biz_codes))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<ApiKey, E> {
                Err(not_shown("a boolean (value not shown)", &self))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<ApiKey, E> {
                Err(not_shown("a number (value not shown)", &self))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<ApiKey, E> {
                Err(not_shown("a number (value not shown)", &self))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<ApiKey, E> {
                Err(not_shown("a number (value not shown)", &self))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<ApiKey, A::Error> {
                Err(not_shown("a list", &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// `api.keys`: a list of keys; a string holding a JSON array is read as
/// that array (figment reads `SWITCHBOARD_API__KEYS='[{"key":..}]'` as a
/// string: its own syntax for tables is `{key=".."}`). Never echoes a key.
fn deserialize_keys<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ApiKey>, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Vec<ApiKey>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of API keys (in an environment variable: a JSON array)")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<ApiKey>, A::Error> {
            let mut keys = Vec::new();
            while let Some(k) = seq.next_element()? {
                keys.push(k);
            }
            Ok(keys)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<ApiKey>, E> {
            if !v.trim_start().starts_with('[') {
                return Err(not_shown("a string (value not shown)", &self));
            }
            serde_json::from_str(v).map_err(|e| E::custom(format!("not a JSON array of API keys: {e}")))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Vec<ApiKey>, E> {
            Err(not_shown("a boolean (value not shown)", &self))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Vec<ApiKey>, E> {
            Err(not_shown("a number (value not shown)", &self))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Vec<ApiKey>, E> {
            Err(not_shown("a number (value not shown)", &self))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Vec<ApiKey>, E> {
            Err(not_shown("a number (value not shown)", &self))
        }
    }
    d.deserialize_any(V)
}

/// Router settings. Every field has a safe default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Address of the HTTP API and ops server. Default `0.0.0.0:8090`.
    pub listen: SocketAddr,
    /// Accept queue of the listening socket (`listen(2)` backlog), capped
    /// by the kernel at `net.core.somaxconn`. Default 4096.
    pub listen_backlog: u32,
    /// A node silent for this long is dead and its clients are purged from
    /// presence. Default `6s` (edges beat every 2 s; SPEC allows 10 s).
    #[serde(with = "humantime_serde")]
    pub node_timeout: Duration,
    /// Presence notices: `off`, `groups` or `biz`. Default `groups`.
    pub presence_notices: NoticeScope,
    /// Groups (or bizCodes, with `biz`) larger than this get no notices.
    /// Default 500.
    pub notice_max_members: usize,
    /// How long the KV keeps the marker of a removed presence entry.
    /// Default `60s`.
    #[serde(with = "humantime_serde")]
    pub delete_marker_ttl: Duration,
    /// Serve the web console's admin view at `/console` (static pages
    /// embedded in the binary, which adds them in front of the router; the
    /// view calls this router's own API with an API key the user types).
    /// Default false (`standalone` has its own `standalone.console`).
    pub console: bool,
    /// Most delivery receipt waits of client sends (`"ack":true`) this
    /// router holds at once; past it such a send is refused with 1005.
    /// Default 100000.
    pub max_receipt_waits: usize,
    /// Durable membership (the top-level `[membership]` section, copied
    /// here by the binary).
    #[serde(skip)]
    pub membership: MembershipConfig,
}

/// `[membership]`: groups bound with `bind_to_group` belong to
/// bizCode+clientId and are restored on reconnect (SPEC §7).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipConfig {
    /// A client offline for longer than this loses its bound groups.
    /// Default `10m`; between 1 s and 30 days.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(600),
        }
    }
}

impl MembershipConfig {
    /// Pushes configuration problems.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(30 * 86_400) {
            problems.push("membership.ttl must be between 1s and 30 days".into());
        }
    }
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8090)),
            listen_backlog: switchboard_runtime::config::DEFAULT_LISTEN_BACKLOG,
            node_timeout: Duration::from_secs(6),
            presence_notices: NoticeScope::Groups,
            notice_max_members: 500,
            delete_marker_ttl: Duration::from_secs(60),
            console: false,
            max_receipt_waits: crate::core::DEFAULT_MAX_CLIENT_RECEIPT_WAITS,
            membership: MembershipConfig::default(),
        }
    }
}

impl RouterConfig {
    /// Pushes configuration problems.
    pub fn validate(&self, problems: &mut Vec<String>) {
        switchboard_runtime::config::validate_listen_backlog("router.listen_backlog", self.listen_backlog, problems);
        if self.node_timeout < Duration::from_secs(1) || self.node_timeout > Duration::from_secs(9) {
            problems.push(
                "router.node_timeout must be between 1s and 9s (SPEC: a dead edge leaves presence within 10s)".into(),
            );
        }
        if self.max_receipt_waits == 0 {
            problems.push("router.max_receipt_waits must be positive".into());
        }
        if self.delete_marker_ttl < Duration::from_secs(1) {
            problems.push("router.delete_marker_ttl must be at least 1s".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(v: serde_json::Value) -> Result<ApiConfig, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    fn problems(c: &ApiConfig) -> Vec<String> {
        let mut p = Vec::new();
        c.validate(&mut p);
        p
    }

    #[test]
    fn keys_are_strings_or_scoped_tables() {
        let c = config(json!({"keys": [
            "global-key-0123456789",
            {"key": "shop-key-0123456789ab", "biz_codes": ["shop", "chat"]},
        ]}))
        .expect("valid");
        assert_eq!(
            c.keys,
            vec![
                ApiKey::global("global-key-0123456789"),
                ApiKey::scoped("shop-key-0123456789ab", vec!["shop".into(), "chat".into()]),
            ]
        );
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
        assert!(c.keys[0].allows("anything") && c.keys[1].allows("chat") && !c.keys[1].allows("news"));

        // A JSON array in a string (how figment hands over an env variable).
        let text = r#"[{"key":"shop-key-0123456789ab","biz_codes":["shop"]}, "global-key-0123456789"]"#;
        let c = config(json!({ "keys": text })).expect("valid");
        assert_eq!(c.keys[0].biz_codes(), Some(&["shop".to_owned()][..]));
        assert_eq!(c.keys[1].biz_codes(), None);
    }

    #[test]
    fn bad_keys_are_refused_without_showing_them() {
        for v in [
            json!({"keys": [12345678901234567u64]}),
            json!({"keys": [{"key": true, "biz_codes": ["shop"]}]}),
            json!({"keys": [{"key": "secret-key-0123456789"}]}),
            json!({"keys": [{"key": "secret-key-0123456789", "biz_codes": ["a"], "extra": 1}]}),
            json!({"keys": "secret-key-0123456789"}),
            json!({"keys": r#"[{"key":"secret-key-0123456789","biz_codes":["a"]"#}),
        ] {
            let e = config(v.clone()).expect_err("refused");
            assert!(
                !e.contains("secret-key") && !e.contains("12345678901234567"),
                "{v}: {e}"
            );
        }
        let e = config(json!({"keys": [{"key": "secret-key-0123456789"}]})).expect_err("refused");
        assert!(e.contains("biz_codes"), "{e}");
    }

    #[test]
    fn scoped_keys_are_validated() {
        let c = config(json!({"keys": [
            "short",
            {"key": "tiny", "biz_codes": ["shop"]},
            {"key": "no-codes-0123456789ab", "biz_codes": []},
            {"key": "bad-codes-0123456789a", "biz_codes": ["ok", "a b", ""]},
            {"key": "no-codes-0123456789ab", "biz_codes": ["shop"]},
        ]}))
        .expect("parsed");
        let p = problems(&c);
        let want = [
            "api.keys[0]: a key must be at least 16 characters",
            "api.keys[1]: a key must be at least 16 characters",
            "api.keys[2]: a scoped key needs at least one bizCode",
            "api.keys[3].biz_codes: \"a b\": bizCode may only contain",
            "api.keys[3].biz_codes: \"\": bizCode is empty",
            "api.keys[4]: the same key as api.keys[2]",
        ];
        assert_eq!(p.len(), want.len(), "{p:#?}");
        for (got, want) in p.iter().zip(want) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
        assert!(p.iter().all(|m| !m.contains("0123456789")), "{p:#?}");
        let debug = format!("{c:?}");
        assert!(!debug.contains("0123456789") && !debug.contains("short"), "{debug}");
        assert!(debug.contains("[5 redacted, 4 scoped]"), "{debug}");
    }

    #[test]
    fn the_rate_limit_is_on_by_default_and_needs_a_burst() {
        let c = ApiConfig::default();
        assert_eq!((c.rate_per_sec, c.rate_burst), (1000, 2000));
        let c = config(json!({"rate_per_sec": 10, "rate_burst": 0})).expect("parsed");
        assert_eq!(
            problems(&c),
            ["api.rate_burst must be positive when api.rate_per_sec is on (above 0)"]
        );
        let off = config(json!({"rate_per_sec": 0, "rate_burst": 0})).expect("parsed");
        assert!(problems(&off).is_empty());
    }
}
