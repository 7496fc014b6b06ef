// Against a real local cluster (NATS, a router, three edges, nginx in front):
// every mode across edges; kill -9 of a client's edge → it reconnects through
// nginx to another edge and recovers what was sent meanwhile; an edge drained
// (SIGTERM) under 500 of its clients, with a drain window too short to spread
// its 1012s → the SDK's jitter spreads their reconnects, no herd.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { api, assertExactlyOnce, checkEveryMode, client, env, uniqueBiz, waitFor, withContent } from '../support.mjs';

const url = env('SB_WS_URL');
const http = env('SB_API');
/** [{ name: 'edge1', pid, url }], as the harness started them. */
const edges = JSON.parse(env('SB_EDGES'));
/** Edges this file has killed or drained. */
const gone = new Set();

function edgeOf(node) {
  const e = edges.find((e) => node.startsWith(`${e.name}-`));
  assert.ok(e, `no edge for node ${node}`);
  return e;
}

test('every mode across edges and through the load balancer', async () => {
  await checkEveryMode([edges[0].url, edges[1].url, url], http, 30);
});

test('kill -9 of the edge: reconnects to another edge and recovers what was sent meanwhile', async () => {
  const biz = uniqueBiz();
  // While `held`, attempts go to the dead edge's address (as a load balancer
  // that has not noticed yet would send them): refused for real, so the
  // sends below surely happen while the client is away.
  let held;
  class HeldWebSocket extends WebSocket {
    constructor(u) {
      super(held === undefined ? u : u.replace(url, held));
    }
  }
  const a = client({ url, bizCode: biz, clientId: 'a', groups: ['room'], WebSocket: HeldWebSocket, backoffBaseMs: 100, backoffCapMs: 400 });
  const first = await a.sb.connect();
  const dead = edgeOf(first.node);
  const other = edges.find((e) => e !== dead && !gone.has(e.name));
  const s = client({ url: other.url, bizCode: biz, clientId: 's', groups: ['room'] });
  await s.sb.connect();
  await s.sb.send({ clientId: 'a' }, 'before');
  await waitFor(() => withContent(a.log, 'before').length === 1, 'the first unicast');

  held = dead.url;
  process.kill(dead.pid, 'SIGKILL');
  gone.add(dead.name);
  await waitFor(() => a.log.states.some((st) => st.state === 'reconnecting'), 'the drop', 15000, a.log);
  const meanwhile = ['unicast while away', 'group while away', 'broadcast while away'];
  for (const [target, content] of [
    [{ clientId: 'a' }, meanwhile[0]],
    [{ group: 'room' }, meanwhile[1]],
    [{ broadcast: true }, meanwhile[2]],
  ]) {
    await s.sb.send(target, content);
  }
  const apiSends = [
    ['send_to_client', { clientId: 'a', sendUserId: 'api', code: 0, msg: 'api unicast', data: null }],
    ['send_to_group', { groupName: 'room', sendUserId: 'api', code: 0, msg: 'api group', data: null }],
  ];
  for (const [call, body] of apiSends) {
    const res = await api(http, biz, call, body);
    assert.equal(res.status, 200, JSON.stringify(res.body));
  }
  assert.equal(a.sb.state === 'connected', false, 'still away while the sends were made');
  const refused = a.log.states.filter((st) => st.state === 'reconnecting').length;
  held = undefined;

  await waitFor(() => a.log.recovered.length === 1, 'the reconnect', 20000, a.log);
  assert.equal(a.log.recovered[0].recovered, true);
  assert.notEqual(edgeOf(a.sb.welcome.node), dead, 'landed on another edge');
  const apiContents = apiSends.map(([, b]) => ({ code: 0, msg: b.msg, data: null }));
  const all = ['before', ...meanwhile, ...apiContents];
  await waitFor(() => all.every((c) => withContent(a.log, c).length > 0), 'everything sent meanwhile', 15000, a.log);
  assertExactlyOnce(a.log, all, 'a');
  assert.ok(refused >= 1, 'attempts refused at the dead edge');
});

test('500 clients of a drained edge reconnect spread out, no thundering herd', async (t) => {
  const live = edges.filter((e) => !gone.has(e.name));
  assert.ok(live.length >= 2, 'needs two live edges');
  const target = live[0];
  const biz = uniqueBiz('herd');
  const want = 500;
  const onTarget = [];
  const elsewhere = [];
  // nginx spreads connections round robin: connect until 500 (or a few
  // more) are on target.
  for (let batch = 0; onTarget.length < want; batch++) {
    assert.ok(batch < 40, `only ${onTarget.length} of ${want} clients landed on ${target.name}`);
    const made = Array.from({ length: 100 }, (_, i) => client({ url, bizCode: biz, clientId: `m${batch}-${i}` }));
    const welcomes = await Promise.all(made.map((c) => c.sb.connect()));
    welcomes.forEach((w, i) => {
      if (edgeOf(w.node) === target) onTarget.push(made[i]);
      else elsewhere.push(made[i]);
    });
  }
  const drainedAt = Date.now();
  process.kill(target.pid, 'SIGTERM');
  gone.add(target.name);
  await waitFor(
    () => onTarget.every((c) => c.log.recovered.length === 1),
    'every drained client reconnected',
    40000,
  );
  const tookMs = Date.now() - drainedAt;

  // Each came back elsewhere, recovered, after a 1012.
  for (const c of onTarget) {
    const lost = c.log.states.find((s) => s.state === 'reconnecting');
    assert.equal(lost.code, 1012, JSON.stringify(c.log.states));
    assert.equal(c.log.recovered[0].recovered, true);
    assert.notEqual(edgeOf(c.sb.welcome.node), target);
  }
  // The others never moved.
  for (const c of elsewhere) assert.equal(c.log.states.length, 2, JSON.stringify(c.log.states));

  // The harness gives the edges a 100 ms drain window (edge.drain_window),
  // so the edge's own spreading of its 1012s over the window is negligible:
  // the 500 lose their connection nearly at once, and only the SDK's jitter
  // spreads their reconnects.
  const closedAt = onTarget.map((c) => c.log.states.find((s) => s.state === 'reconnecting').at).sort((x, y) => x - y);
  const closesSpan = pct(closedAt, 0.95) - pct(closedAt, 0.05);
  // Every reconnect attempt (each client's 'connecting' after its first),
  // per 250 ms after the drain: a quarter of the jitter window (a busy event
  // loop here can bunch a few 100 ms' worth of timers together).
  const attempts = onTarget
    .flatMap((c) => c.log.states.filter((s) => s.state === 'connecting').slice(1).map((s) => s.at))
    .sort((x, y) => x - y);
  const buckets = new Map();
  for (const at of attempts) {
    const b = Math.floor((at - drainedAt) / 250);
    buckets.set(b, (buckets.get(b) ?? 0) + 1);
  }
  const counts = [...buckets.entries()].sort((x, y) => x[0] - y[0]);
  const max = Math.max(...counts.map(([, n]) => n));
  const attemptsSpan = pct(attempts, 0.95) - pct(attempts, 0.05);
  // The jitter itself: each client's first delay, uniform in [0, 1000 ms).
  const delays = onTarget.map((c) => c.log.states.find((s) => s.state === 'reconnecting').delayMs).sort((x, y) => x - y);
  const mean = delays.reduce((x, y) => x + y, 0) / delays.length;
  t.diagnostic(
    `drain: 1012s to ${onTarget.length} clients within ${closesSpan} ms (5th-95th percentile); ` +
      `${attempts.length} reconnect attempts, per 250 ms ${JSON.stringify(counts)}, max ${max} ` +
      `(${Math.round((100 * max) / attempts.length)}%), 5th-95th percentile over ${attemptsSpan} ms; ` +
      `first delays min ${delays[0]} median ${delays[delays.length >> 1]} max ${delays.at(-1)} ms; all back in ${tookMs} ms`,
  );
  assert.ok(closesSpan < 500, `the 1012s came over ${closesSpan} ms: the edge spread them, not the SDK`);
  // Uniform over 1 s: about a quarter each; without jitter nearly all.
  assert.ok(max <= attempts.length / 2, `a herd: ${max} of ${attempts.length} attempts in one 250 ms`);
  assert.ok(attemptsSpan >= 600, `attempts within ${attemptsSpan} ms: not spread`);
  assert.ok(delays[0] < 100 && delays.at(-1) > 900, `delays not spread: ${delays[0]}..${delays.at(-1)}`);
  assert.ok(mean > 350 && mean < 650, `mean first delay ${mean} ms, not uniform over [0, 1000)`);
});

/** The `q` quantile of the sorted numbers `xs`. */
function pct(xs, q) {
  return xs[Math.min(xs.length - 1, Math.floor(q * xs.length))];
}
