//! `storm`: an edge dies under its clients and they all reconnect at once.
//!
//! N clients connect over `--targets`, then `--kill` runs (e.g.
//! `kill -9 <edge pid>`). Every client whose connection drops reconnects
//! with full-jitter exponential backoff, trying the targets in turn from
//! the one after its last (a client-side endpoint list; behind a load
//! balancer every target would be the balancer). After each welcome the
//! client asks for a probe: an API `send_to_clients` through the router,
//! which must arrive on the new connection. Reported: time until every
//! dropped client is registered (welcome) and reachable (probe arrived),
//! each client's first reconnect attempt → reachable, connect→welcome of
//! the reconnects, failed attempts, and presence drift (`get_online_list`
//! count minus the clients held) right away and after `--settle`, when the
//! routers have purged the dead edge; a last probe round then checks that
//! every client is still reachable. A probe the API counted as delivered
//! that never arrived (`probes_lost`) fails the run: SPEC §2 promises that
//! a send starting after the welcome reaches the client.
//!
//! - [`options`]: the settings; [`backoff`]: the reconnect backoff.
//! - [`state`]: the per-client slots and counters every task shares.
//! - [`reconnect`]: one client's task; [`probe`]: the probes.
//! - [`recovery`]: the wait after the kill; [`outcome`]: the figures.

pub(crate) mod backoff;
pub(crate) mod options;
mod outcome;
mod probe;
mod reconnect;
mod recovery;
mod state;

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use self::options::StormOptions;
use self::probe::ProbeApi;
use self::reconnect::ClientCtx;
use self::state::Shared;
use crate::common::Common;
use crate::open::open_many;
use crate::report::Report;

/// Runs `storm`: see the module documentation.
pub(crate) async fn run(common: Common, o: StormOptions) -> anyhow::Result<Report> {
    anyhow::ensure!(o.clients > 0, "--clients must be positive");
    anyhow::ensure!(!o.kill.trim().is_empty(), "--kill is required");
    let opened = open_many(&common, o.clients, 0, |i| i, |i| common.query("s", i)).await;
    anyhow::ensure!(opened.failures == 0, "{} initial connections failed", opened.failures);
    let took = opened.took;
    eprintln!("storm: {} clients connected in {:.2}s", o.clients, took.as_secs_f64());

    let (probe_queue, probe_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::new(o.clients, probe_queue));
    let ids: Arc<Vec<String>> = Arc::new((0..o.clients).map(|i| common.id("s", i)).collect());
    let api = ProbeApi {
        url: o.api.clone(),
        key: o.api_key.clone(),
        biz: common.biz.clone(),
    };
    let mut tasks = JoinSet::new();
    tasks.spawn(probe::run_prober(probe_rx, shared.clone(), ids.clone(), api.clone()));
    let endpoints = reconnect::distinct(&common.targets);
    for (i, ws) in opened.clients.into_iter().enumerate() {
        let ws = ws.context("missing client")?;
        let at = endpoints.iter().position(|t| t == common.target(i)).unwrap_or(0);
        let ctx = ClientCtx {
            i,
            shared: shared.clone(),
            endpoints: endpoints.clone(),
            source: common.source(i),
            query: common.query("s", i),
            backoff: o.backoff,
            attempt_timeout: o.attempt_timeout,
        };
        tasks.spawn(reconnect::run_client(ctx, ws, at));
    }

    // The kill.
    let kill_at = Instant::now();
    let _ = shared.kill_at.set(kill_at);
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&o.kill)
        .status()
        .await
        .context("run --kill")?;
    anyhow::ensure!(status.success(), "--kill exited with {status}");
    let (recovered, probe_retries) =
        recovery::wait_recovered(&shared, &ids, kill_at, o.probe_timeout, o.recover_timeout).await;

    let mut r = Report::new("storm");
    r.set("clients", o.clients);
    r.set("initial_connect_seconds", took.as_secs_f64());
    r.set("initial_connect_to_welcome", opened.latency.summary());
    outcome::timings(&shared, &mut r);
    outcome::attempts(&shared, &mut r, probe_retries, o.backoff).await;
    if !recovered {
        let missing = outcome::unreachable(&shared);
        r.problems.push(format!(
            "{missing} clients not reachable {:?} after the kill",
            o.recover_timeout
        ));
        tasks.abort_all();
        return Ok(r);
    }

    let held = o.clients as i64;
    let drift_now = crate::api::online_count(&o.api, &o.api_key, &common.biz)
        .await
        .map(|n| n - held);
    r.set(
        "presence_drift_at_recovery",
        drift_now.as_ref().map(|d| json!(d)).unwrap_or(Value::Null),
    );
    // Past the routers' node timeout: the dead edge's entries are purged,
    // the clients' new ones must survive it.
    tokio::time::sleep(o.settle).await;
    let drift = crate::api::online_count(&o.api, &o.api_key, &common.biz)
        .await
        .context("presence check after --settle")?
        - held;
    r.set("settle_seconds", o.settle.as_secs_f64());
    outcome::lost_probes(&shared, &mut r);
    r.set("presence_drift", drift);
    if drift != 0 {
        r.problems.push(format!(
            "presence drift {drift} after --settle (get_online_list count minus the {held} clients held)"
        ));
    }
    let (missing, recipients) = probe::final_probe_round(&shared, &ids, &api).await?;
    r.set("final_probe_recipients", recipients);
    r.set("final_probe_missing", missing);
    if missing > 0 {
        r.problems.push(format!(
            "{missing} clients did not get the final probe (after --settle)"
        ));
    }
    tasks.abort_all();
    Ok(r)
}
