//! What the storm's client tasks, its prober and its report share: one
//! [`Slot`] per client and the run's counters.

use std::sync::atomic::{AtomicU64, AtomicU8};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Mutex};

use crate::report::Latency;

/// Where a client is: connected since before the kill.
pub(crate) const CONNECTED: u8 = 0;
/// Its connection dropped; reconnecting.
pub(crate) const DOWN: u8 = 1;
/// Welcomed again; its probe has not arrived yet.
pub(crate) const AWAITING_PROBE: u8 = 2;
/// A probe arrived on its new connection.
pub(crate) const REACHABLE: u8 = 3;

/// One client's progress; times are ns since the kill (0: not yet).
#[derive(Default)]
pub(crate) struct Slot {
    /// [`CONNECTED`], [`DOWN`], [`AWAITING_PROBE`] or [`REACHABLE`].
    pub(crate) state: AtomicU8,
    /// When it first noticed its connection was gone.
    pub(crate) lost_ns: AtomicU64,
    /// Its first reconnect attempt.
    pub(crate) first_attempt_ns: AtomicU64,
    /// Its welcome after the storm.
    pub(crate) registered_ns: AtomicU64,
    /// A probe arrived after that welcome.
    pub(crate) reachable_ns: AtomicU64,
    /// Last probe asked for (for re-probing).
    pub(crate) probed_ns: AtomicU64,
    /// The final round's probe arrived.
    pub(crate) final_probe: AtomicU8,
}

/// What every client task shares.
pub(crate) struct Shared {
    pub(crate) slots: Vec<Slot>,
    /// Set when the kill command starts.
    pub(crate) kill_at: OnceLock<Instant>,
    /// Clients that want a probe (by index).
    pub(crate) probe_queue: mpsc::UnboundedSender<usize>,
    pub(crate) attempts: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) other_failures: AtomicU64,
    pub(crate) closed_before_kill: AtomicU64,
    /// Client ids named in probe requests, and the recipients the API
    /// counted for them (fewer: it found some not online).
    pub(crate) probed_ids: AtomicU64,
    pub(crate) probe_recipients: AtomicU64,
    /// Storm probes that arrived (a re-probed client may get two).
    pub(crate) probes_received: AtomicU64,
    pub(crate) first_error: Mutex<Option<String>>,
    pub(crate) reconnect_latency: Mutex<Latency>,
}

impl Shared {
    /// State for `clients` clients, probes queued on `probe_queue`.
    pub(crate) fn new(clients: usize, probe_queue: mpsc::UnboundedSender<usize>) -> Self {
        Self {
            slots: (0..clients).map(|_| Slot::default()).collect(),
            kill_at: OnceLock::new(),
            probe_queue,
            attempts: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            other_failures: AtomicU64::new(0),
            closed_before_kill: AtomicU64::new(0),
            probed_ids: AtomicU64::new(0),
            probe_recipients: AtomicU64::new(0),
            probes_received: AtomicU64::new(0),
            first_error: Mutex::new(None),
            reconnect_latency: Mutex::new(Latency::new()),
        }
    }

    /// ns since the kill, at least 1 (0 means "not yet").
    pub(crate) fn since_kill(&self) -> u64 {
        self.kill_at.get().map(|t| dur_ns(t.elapsed()).max(1)).unwrap_or(1)
    }
}

/// A duration in ns, saturating.
pub(crate) fn dur_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
