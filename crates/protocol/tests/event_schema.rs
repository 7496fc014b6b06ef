//! `docs/events.schema.json` documents exactly what [`Event`] writes: the
//! same field names, kinds and causes, so the schema cannot drift from the
//! code.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use switchboard_protocol::event::{Cause, Event, EventKind};

fn schema() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/events.schema.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_schema_names_every_field_kind_and_cause() {
    let schema = schema();
    let every_field = Event::new("id".into(), EventKind::Upstream, "d1", "c1", "n", 1)
        .with_conn(1)
        .with_edge("e")
        .with_groups(vec!["g".into()])
        .with_close(1000, "", Cause::Close)
        .with_group("g")
        .with_upstream(Some("m".into()), "1")
        .unwrap_or_else(|e| panic!("{e}"));
    let written: Value = serde_json::from_slice(&every_field.to_json()).unwrap_or_else(|e| panic!("{e}"));
    let fields: BTreeSet<String> = written
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let documented: BTreeSet<String> = schema["properties"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(fields, documented);
    assert_eq!(
        strings(&schema["required"]),
        ["id", "kind", "bizCode", "clientId", "node", "ts"]
            .map(str::to_owned)
            .into()
    );

    let kinds: BTreeSet<String> = EventKind::ALL.iter().map(|k| k.as_str().to_owned()).collect();
    assert_eq!(strings(&schema["properties"]["kind"]["enum"]), kinds);

    let causes = [
        Cause::Close,
        Cause::CrashPurge,
        Cause::Drain,
        Cause::Replaced,
        Cause::ApiClose,
        Cause::IdleTimeout,
        Cause::TokenExpired,
        Cause::SlowConsumer,
        Cause::ProtocolError,
        Cause::Error,
        Cause::Other,
    ];
    let causes: BTreeSet<String> = causes.iter().map(|c| c.as_str().to_owned()).collect();
    assert_eq!(strings(&schema["properties"]["cause"]["enum"]), causes);
    for c in &causes {
        let parsed: Cause = serde_json::from_str(&format!("\"{c}\"")).unwrap_or(Cause::Other);
        assert_eq!(parsed.as_str(), c);
    }
}
