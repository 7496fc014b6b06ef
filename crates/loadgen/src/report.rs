//! Latency histograms and the run report (human summary + one JSON line).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// Microsecond latency histogram.
pub(crate) struct Latency(Histogram<u64>);

impl Latency {
    pub(crate) fn new() -> Self {
        // 1 µs .. 10 min, 3 significant digits: constant, valid bounds.
        Self(Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid"))
    }

    pub(crate) fn record_ns(&mut self, ns: u64) {
        let _ = self.0.record((ns / 1000).max(1));
    }

    pub(crate) fn record(&mut self, d: Duration) {
        self.record_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub(crate) fn add(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    /// p50/p90/p99/p99.9/max in µs.
    pub(crate) fn summary(&self) -> Value {
        if self.0.is_empty() {
            return json!(null);
        }
        json!({
            "p50_us": self.0.value_at_quantile(0.5),
            "p90_us": self.0.value_at_quantile(0.9),
            "p99_us": self.0.value_at_quantile(0.99),
            "p999_us": self.0.value_at_quantile(0.999),
            "max_us": self.0.max(),
            "count": self.0.len(),
        })
    }
}

/// The result of one run.
pub(crate) struct Report {
    pub(crate) scenario: &'static str,
    pub(crate) fields: Map<String, Value>,
    /// Problems that make the run a failure (losses, drift, failures).
    pub(crate) problems: Vec<String>,
}

impl Report {
    pub(crate) fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            fields: Map::new(),
            problems: Vec::new(),
        }
    }

    pub(crate) fn set(&mut self, key: &str, v: impl Into<Value>) {
        self.fields.insert(key.to_owned(), v.into());
    }

    pub(crate) fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    pub(crate) fn json(&self) -> String {
        let mut m = Map::new();
        m.insert("scenario".into(), json!(self.scenario));
        m.extend(self.fields.clone());
        m.insert("ok".into(), json!(self.ok()));
        m.insert("problems".into(), json!(self.problems));
        Value::Object(m).to_string()
    }

    pub(crate) fn human(&self) -> String {
        let mut s = format!("== {} ==", self.scenario);
        for (k, v) in &self.fields {
            s.push_str(&format!("\n  {k:<28} {v}"));
        }
        if self.problems.is_empty() {
            s.push_str("\n  result                       ok");
        } else {
            for p in &self.problems {
                s.push_str(&format!("\n  PROBLEM: {p}"));
            }
        }
        s
    }
}
