//! A fleet of test clients that stay connected through faults: each one
//! owns its connection in a task, reconnects with recovery
//! (`recover=<seq>&epoch=<epoch>`, SPEC §7) with jittered backoff whenever
//! its connection ends, and records what it saw: welcomes, closes, refused
//! connects, every delivery (by label) and any order or tenant violation.
//! A [`Ledger`] records what the test sent and to whom it was addressed, so
//! [`Fleet::check`] can say what was lost, duplicated or misdelivered.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;
use serde_json::{json, Value};
use switchboard_testkit::Ws;
use tokio::sync::{mpsc, oneshot};

/// What a member recorded.
#[derive(Debug, Default)]
pub struct Log {
    /// Each welcome's `data`, in order.
    pub welcomes: Vec<Value>,
    /// When each welcome came.
    pub welcomed_at: Vec<Instant>,
    /// How each connection ended (code), and when.
    pub closes: Vec<(u16, Instant)>,
    /// Connect attempts that got no welcome: `HTTP 503`, `close 1013`, ...
    pub refusals: Vec<(String, Instant)>,
    /// Deliveries (modes 100/200/300) by label, over all connections.
    pub received: BTreeMap<String, u32>,
    /// Order or tenant violations (a `seq` not above the last, another
    /// bizCode's label).
    pub problems: Vec<String>,
    /// Whether a connection is open (after its welcome).
    pub online: bool,
    /// The node of the current (or last) connection.
    pub node: String,
}

impl Log {
    /// Welcomes of reconnects (after the first) that did not say
    /// `recovered: true`.
    pub fn unrecovered(&self) -> Vec<Value> {
        self.welcomes
            .iter()
            .skip(1)
            .filter(|w| w["recovered"] != true)
            .cloned()
            .collect()
    }
}

enum Cmd {
    Send(Value, oneshot::Sender<Option<u64>>),
    /// Drop the connection without a close handshake and reconnect.
    Reset,
    Stop,
}

/// One client of the fleet.
pub struct Member {
    pub id: String,
    pub biz: String,
    pub groups: Vec<String>,
    pub log: Arc<Mutex<Log>>,
    tx: mpsc::UnboundedSender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

/// A send's fate: the reply's code, or `None` when the connection ended
/// before the reply (outcome unknown).
pub type Reply = oneshot::Receiver<Option<u64>>;

impl Member {
    /// Starts a client of `biz` with `id` and `groups` that connects to the
    /// first of `urls` (`ws://host:port/ws`), then moves to the next one
    /// whenever a connect is refused.
    pub fn spawn(urls: Vec<String>, biz: &str, id: &str, groups: &[&str]) -> Self {
        let log = Arc::new(Mutex::new(Log::default()));
        let (tx, rx) = mpsc::unbounded_channel();
        let mut query = format!("bizCode={biz}&clientId={id}");
        if !groups.is_empty() {
            query.push_str(&format!("&group={}", groups.join(",")));
        }
        let task = tokio::spawn(run(urls, query, biz.to_owned(), rx, log.clone()));
        Self {
            id: id.to_owned(),
            biz: biz.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            log,
            tx,
            task,
        }
    }

    /// Sends a client frame (its `msgId` names the reply).
    pub fn send(&self, frame: Value) -> Reply {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Cmd::Send(frame, tx));
        rx
    }

    /// Drops the connection (no close handshake); the member reconnects.
    pub fn reset(&self) {
        let _ = self.tx.send(Cmd::Reset);
    }

    pub fn online(&self) -> bool {
        self.log.lock().expect("log").online
    }

    /// Closes normally and ends the task.
    pub async fn stop(self) -> Arc<Mutex<Log>> {
        let _ = self.tx.send(Cmd::Stop);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        self.log
    }
}

/// A label's bizCode prefix: every label the tests send is `<biz>:<...>`.
fn label_of(v: &Value) -> String {
    match &v["content"] {
        Value::String(s) => s.clone(),
        c => c["data"].as_str().map_or_else(|| c.to_string(), str::to_owned),
    }
}

/// Full-jitter backoff: attempt k waits a random time in
/// [50 ms, min(2 s, 100 ms · 2^k)].
fn backoff(attempt: u32) -> Duration {
    let cap = (100u64 << attempt.min(5)).min(2000);
    Duration::from_millis(rand::rng().random_range(50..=cap.max(50)))
}

async fn run(
    urls: Vec<String>,
    query: String,
    biz: String,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    log: Arc<Mutex<Log>>,
) {
    let mut pos: Option<(String, u64)> = None;
    let mut next = 0usize;
    let mut attempt = 0u32;
    let prefix = format!("{biz}:");
    'connect: loop {
        if attempt > 0 {
            // Sends asked for while offline are answered "unknown".
            let wait = tokio::time::sleep(backoff(attempt));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    c = rx.recv() => match c {
                        Some(Cmd::Send(_, reply)) => { let _ = reply.send(None); }
                        Some(Cmd::Reset) => {}
                        Some(Cmd::Stop) | None => return,
                    },
                }
            }
        }
        attempt += 1;
        let q = match &pos {
            Some((epoch, seq)) => format!("{query}&recover={seq}&epoch={epoch}"),
            None => query.clone(),
        };
        let url = format!("{}?{q}", urls[next % urls.len()]);
        let refused = |why: String| log.lock().expect("log").refusals.push((why, Instant::now()));
        let mut ws = match tokio::time::timeout(Duration::from_secs(10), Ws::connect(&url)).await {
            Ok(Ok(ws)) => ws,
            Ok(Err((status, body))) => {
                refused(format!("HTTP {status} {body}"));
                next += 1;
                continue;
            }
            Err(_) => {
                refused("connect timed out".into());
                next += 1;
                continue;
            }
        };
        let welcome = match ws.next_within(Duration::from_secs(15)).await {
            Ok(Some(w)) if w["mode"] == 0 => w,
            Ok(Some(w)) => {
                log.lock()
                    .expect("log")
                    .problems
                    .push(format!("first frame not a welcome: {w}"));
                continue;
            }
            Ok(None) => {
                refused("no welcome within 15 s".into());
                continue;
            }
            Err(c) => {
                refused(format!("close {} {}", c.code, c.reason));
                next += 1;
                continue;
            }
        };
        let data = welcome["data"].clone();
        let epoch = data["epoch"].as_str().unwrap_or_default().to_owned();
        let mut last = data["seq"].as_u64().unwrap_or(0);
        pos = Some((epoch, last));
        {
            let mut l = log.lock().expect("log");
            l.node = data["node"].as_str().unwrap_or_default().to_owned();
            l.welcomes.push(data);
            l.welcomed_at.push(Instant::now());
            l.online = true;
        }
        let mut pending: HashMap<String, oneshot::Sender<Option<u64>>> = HashMap::new();
        enum Ev {
            Cmd(Option<Cmd>),
            Frame(Result<Option<Value>, switchboard_testkit::Closed>),
        }
        loop {
            let ev = tokio::select! {
                c = rx.recv() => Ev::Cmd(c),
                f = ws.next_within(Duration::from_secs(3600)) => Ev::Frame(f),
            };
            match ev {
                Ev::Cmd(Some(Cmd::Send(frame, reply))) => {
                    let id = frame["msgId"].as_str().unwrap_or_default().to_owned();
                    if ws.try_send(&frame).await {
                        pending.insert(id, reply);
                    } else {
                        let _ = reply.send(None);
                    }
                }
                Ev::Cmd(Some(Cmd::Reset)) => {
                    log.lock().expect("log").online = false;
                    ws.reset();
                    attempt = 1;
                    continue 'connect;
                }
                Ev::Cmd(Some(Cmd::Stop) | None) => {
                    log.lock().expect("log").online = false;
                    ws.close().await;
                    return;
                }
                Ev::Frame(Ok(None)) => {}
                Ev::Frame(Ok(Some(v))) => match v["mode"].as_u64() {
                    Some(2) => {
                        let id = v["msgId"].as_str().unwrap_or_default();
                        if let Some(reply) = pending.remove(id) {
                            let _ = reply.send(Some(v["code"].as_u64().unwrap_or(u64::MAX)));
                        }
                    }
                    Some(100 | 200 | 300) => {
                        let label = label_of(&v);
                        let seq = v["seq"].as_u64();
                        let mut l = log.lock().expect("log");
                        if !label.starts_with(&prefix) {
                            l.problems.push(format!("another tenant's frame: {v}"));
                        }
                        // History off: no seq to check.
                        let seq = seq.unwrap_or(last + 1);
                        if seq <= last {
                            l.problems
                                .push(format!("seq {seq} not above {last} on one connection: {v}"));
                        }
                        last = last.max(seq);
                        if let Some(p) = pos.as_mut() {
                            p.1 = last;
                        }
                        *l.received.entry(label).or_default() += 1;
                    }
                    _ => {}
                },
                Ev::Frame(Err(closed)) => {
                    let mut l = log.lock().expect("log");
                    l.online = false;
                    l.closes.push((closed.code, Instant::now()));
                    drop(l);
                    for (_, reply) in pending.drain() {
                        let _ = reply.send(None);
                    }
                    attempt = 1;
                    continue 'connect;
                }
            }
        }
    }
}

/// What the test sent: every attempt with the clients it was addressed to,
/// and which were acknowledged (code 0, API 200).
#[derive(Debug, Default)]
pub struct Ledger {
    /// label → addressed clientIds (bizCode-qualified: `biz/id`).
    pub attempted: BTreeMap<String, BTreeSet<String>>,
    pub acked: BTreeSet<String>,
    /// Replies other than success: (label, code or HTTP status).
    pub refused: Vec<(String, u64)>,
    /// Sends whose outcome is unknown (the connection ended first, or the
    /// API connection failed).
    pub unknown: Vec<String>,
    /// Sends that got no answer at all within 30 s (the connection stayed
    /// open): silently dropped.
    pub silent: Vec<String>,
}

/// The clients of a test, by index.
#[derive(Default)]
pub struct Fleet {
    pub members: Vec<Member>,
}

/// What a send is addressed to.
#[derive(Debug, Clone)]
pub enum To {
    Client(String),
    Group(String),
    Biz,
}

impl Fleet {
    pub fn add(&mut self, m: Member) -> usize {
        self.members.push(m);
        self.members.len() - 1
    }

    /// `biz/id` of the members a send of `biz` to `to` from `sender`
    /// (a member's id, excluded from its own group sends and broadcasts;
    /// `None` for the API) reaches.
    pub fn addressed(&self, biz: &str, sender: Option<&str>, to: &To) -> BTreeSet<String> {
        self.members
            .iter()
            .filter(|m| m.biz == biz)
            .filter(|m| match to {
                To::Client(c) => &m.id == c,
                To::Group(g) => m.groups.contains(g) && Some(m.id.as_str()) != sender,
                To::Biz => Some(m.id.as_str()) != sender,
            })
            .map(|m| format!("{}/{}", m.biz, m.id))
            .collect()
    }

    /// Member `i` sends `label` to `to`; recorded in `ledger` when the reply
    /// comes (or it is found unknown). Returns the reply's code.
    pub async fn send(&self, ledger: &Mutex<Ledger>, i: usize, label: &str, to: &To) -> Option<u64> {
        let m = &self.members[i];
        let (mode, extra) = match to {
            To::Client(c) => (100, json!({"targetClientId": c})),
            To::Group(g) => (200, json!({"group": g})),
            To::Biz => (300, json!({})),
        };
        let mut frame = json!({"mode": mode, "msgId": label, "content": label});
        if let (Some(o), Value::Object(e)) = (frame.as_object_mut(), extra) {
            o.extend(e);
        }
        let addressed = self.addressed(&m.biz, Some(&m.id), to);
        ledger
            .lock()
            .expect("ledger")
            .attempted
            .insert(label.to_owned(), addressed);
        let reply = m.send(frame);
        let answer = tokio::time::timeout(Duration::from_secs(30), reply).await;
        let mut l = ledger.lock().expect("ledger");
        match answer {
            Ok(Ok(Some(0))) => {
                l.acked.insert(label.to_owned());
                Some(0)
            }
            Ok(Ok(Some(c))) => {
                l.refused.push((label.to_owned(), c));
                Some(c)
            }
            Ok(_) => {
                l.unknown.push(label.to_owned());
                None
            }
            Err(_) => {
                l.silent.push(label.to_owned());
                None
            }
        }
    }

    /// An API send of `biz` to `to` through `router`; recorded in `ledger`.
    /// Returns the HTTP status (0: no answer).
    pub async fn api_send(&self, ledger: &Mutex<Ledger>, router: &str, biz: &str, label: &str, to: &To) -> u16 {
        let (call, body) = match to {
            To::Client(c) => (
                "send_to_client",
                json!({"clientId": c, "sendUserId": "api", "data": label}),
            ),
            To::Group(g) => (
                "send_to_group",
                json!({"groupName": g, "sendUserId": "api", "data": label}),
            ),
            To::Biz => ("send_to_system", json!({"sendUserId": "api", "data": label})),
        };
        let addressed = self.addressed(biz, None, to);
        ledger
            .lock()
            .expect("ledger")
            .attempted
            .insert(label.to_owned(), addressed);
        let auth = format!("Bearer {}", super::API_KEY);
        let headers = [("systemId", biz), ("Authorization", auth.as_str())];
        let (path, body) = (format!("/api/websocket/{call}"), body.to_string());
        let post = switchboard_testkit::http_post(router, &path, &headers, &body);
        let answer = tokio::time::timeout(Duration::from_secs(30), post).await;
        let mut l = ledger.lock().expect("ledger");
        match answer {
            Ok(Ok((200, _))) => {
                l.acked.insert(label.to_owned());
                200
            }
            Ok(Ok((s, _))) => {
                l.refused.push((label.to_owned(), u64::from(s)));
                s
            }
            Ok(Err(_)) => {
                l.unknown.push(label.to_owned());
                0
            }
            Err(_) => {
                l.silent.push(label.to_owned());
                0
            }
        }
    }

    /// What is wrong so far: acknowledged sends an addressed member has not
    /// received (`missing`), and duplicates, misdeliveries and the members'
    /// own problems (`wrong`).
    pub fn check(&self, ledger: &Ledger) -> (Vec<String>, Vec<String>) {
        let mut missing = Vec::new();
        let mut wrong = Vec::new();
        for m in &self.members {
            let who = format!("{}/{}", m.biz, m.id);
            let log = m.log.lock().expect("log");
            for label in &ledger.acked {
                let to_me = ledger.attempted.get(label).is_some_and(|a| a.contains(&who));
                if to_me && !log.received.contains_key(label) {
                    missing.push(format!("{who} never got {label}"));
                }
            }
            for (label, n) in &log.received {
                if *n > 1 {
                    wrong.push(format!("{who} got {label} {n} times"));
                }
                match ledger.attempted.get(label) {
                    Some(a) if a.contains(&who) => {}
                    Some(_) => wrong.push(format!("{who} got {label}, not addressed to it")),
                    None => wrong.push(format!("{who} got {label}, never sent")),
                }
            }
            wrong.extend(log.problems.iter().map(|p| format!("{who}: {p}")));
        }
        (missing, wrong)
    }

    /// The ids of `biz`'s members with an open connection, sorted.
    pub fn online(&self, biz: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.biz == biz && m.online())
            .map(|m| m.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// The members without a connection, with their last refusals and
    /// closes (for failure messages).
    pub fn offline_report(&self) -> String {
        let mut out = String::new();
        for m in self.members.iter().filter(|m| !m.online()) {
            let log = m.log.lock().expect("log");
            let refusals: Vec<&String> = log.refusals.iter().rev().take(3).map(|r| &r.0).collect();
            let closes: Vec<u16> = log.closes.iter().map(|c| c.0).collect();
            out.push_str(&format!(
                "\n{}/{}: closes {closes:?}, {} refusals, last {refusals:?}, welcomes {}",
                m.biz,
                m.id,
                log.refusals.len(),
                log.welcomes.len()
            ));
        }
        out
    }

    /// How long each member was without a connection after each close
    /// (until its next welcome), in ms, sorted.
    pub fn offline_gaps_ms(&self) -> Vec<u128> {
        let mut gaps = Vec::new();
        for m in &self.members {
            let log = m.log.lock().expect("log");
            for (close, at) in log.closes.iter().map(|c| c.1).zip(log.welcomed_at.iter().skip(1)) {
                gaps.push(at.saturating_duration_since(close).as_millis());
            }
        }
        gaps.sort_unstable();
        gaps
    }

    /// Stops every member (normal close).
    pub async fn stop(self) -> Vec<(String, Arc<Mutex<Log>>)> {
        let mut out = Vec::new();
        for m in self.members {
            let who = format!("{}/{}", m.biz, m.id);
            out.push((who, m.stop().await));
        }
        out
    }
}

/// `get_online_list` of `biz` on `router`, sorted; `None` on a refusal.
pub async fn online_list(router: &str, biz: &str) -> Option<Vec<String>> {
    let (status, r) = super::api(router, biz, "get_online_list", json!({})).await;
    if status != 200 {
        return None;
    }
    let mut ids: Vec<String> = r["data"]["list"]
        .as_array()?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    ids.sort();
    Some(ids)
}
