//! Probes: API `send_to_clients` requests whose delivery proves a client
//! reachable on its new connection, the prober that batches them, and the
//! final round after `--settle`.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_protocol::frame::MODE_UNICAST;
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use super::state::Shared;

/// `sendUserId` of the probes, so clients tell them from anything else.
const PROBE_FROM: &str = "storm-probe";
/// Most client ids in one `send_to_clients` (the API's default limit).
const PROBE_BATCH: usize = 1000;
/// Probe requests in flight at once.
const PROBES_IN_FLIGHT: usize = 4;
/// How long the final round waits for its probes.
const FINAL_ROUND_WAIT: Duration = Duration::from_secs(5);

/// Where probes are sent: the HTTP API (router or standalone) as tenant
/// `biz`.
#[derive(Clone)]
pub(crate) struct ProbeApi {
    pub(crate) url: String,
    pub(crate) key: String,
    pub(crate) biz: String,
}

impl ProbeApi {
    /// `send_to_clients` to `batch` (indexes into `ids`); the recipients
    /// the API counted.
    async fn send(&self, ids: &[String], batch: &[usize], last: bool) -> anyhow::Result<u64> {
        let list: Vec<&str> = batch.iter().map(|&i| ids[i].as_str()).collect();
        let body: Value =
            json!({"clientIds": list, "sendUserId": PROBE_FROM, "code": 0, "msg": "probe", "data": {"final": last}});
        let v = crate::api::post(&self.url, &self.key, &self.biz, "send_to_clients", &body).await?;
        Ok(v["data"]["recipients"].as_u64().unwrap_or(0))
    }
}

/// A probe as a client receives it: a unicast delivery from
/// [`PROBE_FROM`] whose content is the API body's `{code, msg, data}`.
#[derive(Deserialize)]
struct ProbeFrame<'a> {
    mode: u16,
    #[serde(borrow, default)]
    from: Option<Cow<'a, str>>,
    #[serde(default)]
    content: Option<ProbeContent>,
}

#[derive(Deserialize)]
struct ProbeContent {
    #[serde(default)]
    data: Option<ProbeData>,
}

#[derive(Deserialize)]
struct ProbeData {
    #[serde(default, rename = "final")]
    last: bool,
}

/// A received probe.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Asked for after a welcome (or re-probing).
    Reconnected,
    /// Of the final round.
    Final,
}

/// Whether `msg` is a storm probe, and which.
pub(crate) fn probe_in(msg: &Message) -> Option<Probe> {
    let Message::Text(t) = msg else { return None };
    let f: ProbeFrame<'_> = serde_json::from_str(t.as_str()).ok()?;
    if f.mode != MODE_UNICAST || f.from.as_deref() != Some(PROBE_FROM) {
        return None;
    }
    let last = f.content.and_then(|c| c.data).is_some_and(|d| d.last);
    Some(if last { Probe::Final } else { Probe::Reconnected })
}

/// Sends a probe to every client queued, in `send_to_clients` batches.
pub(crate) async fn run_prober(
    mut queue: mpsc::UnboundedReceiver<usize>,
    shared: Arc<Shared>,
    ids: Arc<Vec<String>>,
    api: ProbeApi,
) {
    let in_flight = Arc::new(Semaphore::new(PROBES_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < PROBE_BATCH {
            match queue.try_recv() {
                Ok(i) => batch.push(i),
                Err(_) => break,
            }
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (api, ids, shared) = (api.clone(), ids.clone(), shared.clone());
        tokio::spawn(async move {
            match api.send(&ids, &batch, false).await {
                Ok(n) => {
                    shared.probed_ids.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    shared.probe_recipients.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    let mut first = shared.first_error.lock().await;
                    first.get_or_insert_with(|| format!("probe: {e:#}"));
                }
            }
            drop(permit);
        });
    }
}

/// One more probe to every client: (clients that did not get it within
/// [`FINAL_ROUND_WAIT`], recipients the API counted).
///
/// # Errors
/// If a probe request fails.
pub(crate) async fn final_probe_round(shared: &Shared, ids: &[String], api: &ProbeApi) -> anyhow::Result<(usize, u64)> {
    let all: Vec<usize> = (0..ids.len()).collect();
    let mut recipients = 0;
    for chunk in all.chunks(PROBE_BATCH) {
        recipients += api.send(ids, chunk, true).await.context("final probe")?;
    }
    let deadline = Instant::now() + FINAL_ROUND_WAIT;
    loop {
        let missing = shared
            .slots
            .iter()
            .filter(|s| s.final_probe.load(Ordering::Acquire) == 0)
            .count();
        if missing == 0 || Instant::now() > deadline {
            return Ok((missing, recipients));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::frame::{delivery, SendTarget};

    fn frame(from: &str, content: &str) -> Message {
        let bytes = delivery(&SendTarget::Client("c".into()), None, from, content, 1);
        Message::text(String::from_utf8(bytes).expect("UTF-8"))
    }

    #[test]
    fn tells_probes_from_other_deliveries() {
        let body = |last: bool| json!({"code": 0, "msg": "probe", "data": {"final": last}}).to_string();
        assert_eq!(probe_in(&frame(PROBE_FROM, &body(false))), Some(Probe::Reconnected));
        assert_eq!(probe_in(&frame(PROBE_FROM, &body(true))), Some(Probe::Final));
        assert_eq!(probe_in(&frame("someone", &body(true))), None);
        assert_eq!(probe_in(&frame(PROBE_FROM, "\"text\"")), None);
    }
}
