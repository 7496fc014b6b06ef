// Rolling update under load: run it while the edges are replaced
// (`kubectl rollout restart deployment/<release>-switchboard-edge`, or
// SIGTERM + restart of each edge of a local cluster). Every VU holds one
// client for SESSION_MS in one of ROOMS groups and sends a group message
// every INTERVAL_MS. When an edge drains, its clients are closed with 1012
// and reconnect (full-jitter backoff) with `recover=<seq>&epoch=<epoch>`
// (SPEC §7), so they miss nothing.
//
// Each message carries the sender's own number `n` and `a`, the number of
// its last acknowledged message (mode-2 reply with code 0) before it.
// Messages of one sender reach a member in order, so when a member gets
// message n it must already have had message a (once it has seen that
// sender at all): otherwise an acknowledged message was lost
// (sb_lost_acked). The last messages of a session carry no later proof.
//
// Thresholds: no lost acknowledged message, no duplicate, every reconnect
// recovered, at most MAX_RECONNECTS reconnects per client (one per edge
// replaced: set it to the number of edges), delivery p99 under P99_MS.
//
//   VUS=60 SESSION_MS=300000 MAX_RECONNECTS=3 TARGET=wss://ws.example.com/ws \
//     k6 run loadtest/rolling_update.js
import { WebSocket } from 'k6/experimental/websockets';
import { setInterval, clearInterval, setTimeout } from 'k6/timers';
import { check } from 'k6';
import { Trend, Counter } from 'k6/metrics';
import { VUS, RUN, wsUrl } from './lib.js';

const ROOMS = parseInt(__ENV.ROOMS || '4', 10);
const INTERVAL_MS = parseInt(__ENV.INTERVAL_MS || '1000', 10);
const SESSION_MS = parseInt(__ENV.SESSION_MS || '60000', 10);
const MAX_RECONNECTS = parseInt(__ENV.MAX_RECONNECTS || '3', 10);
const P99_MS = parseInt(__ENV.P99_MS || '1000', 10);

// Deliveries of messages sent after the receiver's current connection was
// welcomed (live), and of messages sent before it (they came by recovery:
// sent while the client was away, or while its edge drained: a draining
// edge's clients leave presence at once, so what is sent to them until
// their 1012 reaches them on recovery).
const latency = new Trend('sb_delivery_latency', true);
const replayLatency = new Trend('sb_replay_latency', true);
const reconnectsPerClient = new Trend('sb_reconnects_per_client');
const reconnects = new Counter('sb_reconnects');
const lostAcked = new Counter('sb_lost_acked');
const duplicates = new Counter('sb_duplicates');
const unrecovered = new Counter('sb_unrecovered');
const acked = new Counter('sb_acked');
const delivered = new Counter('sb_deliveries');
const refused = new Counter('sb_send_refused');

export const options = {
  scenarios: {
    rolling: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: 1,
      maxDuration: `${Math.ceil(SESSION_MS / 1000) + 60}s`,
    },
  },
  thresholds: {
    sb_lost_acked: ['count==0'],
    sb_duplicates: ['count==0'],
    sb_unrecovered: ['count==0'],
    sb_reconnects_per_client: [`max<=${MAX_RECONNECTS}`],
    sb_delivery_latency: [`p(99)<${P99_MS}`],
    checks: ['rate>0.99'],
  },
};

// One run id for every VU: lib.js's RUN is evaluated in each VU's own
// runtime (Date.now() at its init), so VUs would rarely share a room.
export function setup() {
  return { run: RUN };
}

export default function (data) {
  const id = `${data.run}-c${__VU}`;
  const room = `${data.run}-room${__VU % ROOMS}`;
  // The log position to recover from: the welcome's, then each delivery's.
  let epoch = null;
  let seq = null;
  let ws = null;
  let open = false;
  let done = false;
  let attempt = 0;
  let mine = 0; // reconnects of this client
  let n = 0; // this sender's message number
  let lastAcked = 0;
  let pending = null; // the number of the send awaiting its reply
  let welcomedAt = 0;
  const seen = {}; // sender -> { first, got: { n: true } }

  function url() {
    let u = wsUrl(id, room);
    if (epoch !== null) u += `&recover=${seq}&epoch=${encodeURIComponent(epoch)}`;
    return u;
  }

  function connect() {
    if (done) return;
    let welcomed = false;
    ws = new WebSocket(url());
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.mode === 0) {
        if (epoch !== null) {
          mine += 1;
          reconnects.add(1);
          if (m.data.recovered !== true) unrecovered.add(1);
          check(m, { 'reconnect recovered': (x) => x.data.recovered === true });
        }
        welcomed = true;
        welcomedAt = Date.now();
        open = true;
        attempt = 0;
        if (m.data.epoch !== undefined) {
          epoch = m.data.epoch;
          seq = m.data.seq;
        }
      } else if (m.mode === 2) {
        if (pending !== null && m.msgId === `${id}-${pending}`) {
          if (m.code === 0) {
            lastAcked = pending;
            acked.add(1);
          } else {
            refused.add(1, { code: String(m.code) });
          }
          pending = null;
        }
      } else if (m.mode === 200) {
        if (typeof m.seq === 'number') seq = m.seq;
        const c = m.content || {};
        delivered.add(1);
        if (c.t < welcomedAt) replayLatency.add(Date.now() - c.t);
        else latency.add(Date.now() - c.t);
        let s = seen[m.from];
        if (!s) s = seen[m.from] = { first: c.n, got: {} };
        if (s.got[c.n]) duplicates.add(1);
        s.got[c.n] = true;
        if (c.a >= s.first && !s.got[c.a]) lostAcked.add(1, { from: m.from });
      }
    };
    ws.onclose = () => {
      open = false;
      pending = null; // its outcome is unknown: never counted as acknowledged
      if (done) return;
      if (!welcomed) attempt += 1;
      else attempt = 1;
      const cap = Math.min(2000, 100 * 2 ** Math.min(attempt, 5));
      setTimeout(connect, 50 + Math.random() * cap);
    };
    ws.onerror = () => {};
  }

  connect();
  const sender = setInterval(() => {
    if (!open || pending !== null) return;
    n += 1;
    pending = n;
    ws.send(JSON.stringify({
      mode: 200,
      msgId: `${id}-${n}`,
      group: room,
      content: { t: Date.now(), n, a: lastAcked },
    }));
  }, INTERVAL_MS);
  setTimeout(() => {
    done = true;
    clearInterval(sender);
    reconnectsPerClient.add(mine);
    if (ws !== null) ws.close();
  }, SESSION_MS);
}
