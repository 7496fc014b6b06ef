// The client's connection lifecycle with a fake WebSocket (test/fake.mjs)
// and no server: bad urls and throwing constructors, getToken's timeout and
// when a fresh token is asked for, the dead-connection check, the backoff
// of connections that die young, 4009 always terminal, connect()'s errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Switchboard, SwitchboardError } from '../../dist/switchboard.js';
import { fakeWebSocket, withRandom } from '../fake.mjs';
import { client, sleep, waitFor } from '../support.mjs';

/** The `i`th socket the client made (waits for it). */
function socket(fake, i) {
  return waitFor(() => fake.sockets[i], `socket ${i}`, 3000);
}

/** The `n`th `reconnecting` state of `log` (1-based; waits for it). */
function reconnecting(log, n) {
  return waitFor(() => log.states.filter((s) => s.state === 'reconnecting')[n - 1], `reconnecting #${n}`, 3000, log);
}

test('a malformed url ends closed at once with a clear reason; connect() rejects with a SwitchboardError', async () => {
  const fake = fakeWebSocket();
  const { sb, log } = client({ url: 'not a url', bizCode: 'b1', WebSocket: fake.WebSocket });
  const err = await sb.connect().catch((e) => e);
  assert.ok(err instanceof SwitchboardError, String(err));
  assert.equal(err.code, 1006);
  assert.match(err.message, /closed before connecting: 1006 invalid url "not a url"/);
  assert.equal(sb.state, 'closed');
  assert.match(log.states.at(-1).reason, /invalid url/);
  assert.equal(fake.sockets.length, 0);
});

test('a WebSocket constructor that throws: a SyntaxError (url refused) is terminal, anything else a network error', async () => {
  const syntax = fakeWebSocket({ throws: () => new SyntaxError('protocol must be ws: or wss:') });
  const a = client({ url: 'ftp://example.com/ws', bizCode: 'b1', WebSocket: syntax.WebSocket, backoffBaseMs: 20 });
  const err = await a.sb.connect().catch((e) => e);
  assert.ok(err instanceof SwitchboardError);
  assert.match(err.message, /invalid url: protocol must be/);
  assert.equal(a.log.states.filter((s) => s.state === 'connecting').length, 1);

  const broken = fakeWebSocket({ throws: () => new Error('boom') });
  const b = client({ url: 'ws://example.com/ws', bizCode: 'b1', WebSocket: broken.WebSocket, backoffBaseMs: 20 });
  const pending = b.sb.connect().catch((e) => e);
  const lost = await reconnecting(b.log, 1);
  assert.deepEqual([lost.code, lost.reason], [1006, 'WebSocket failed: boom']);
  await waitFor(() => b.log.states.filter((s) => s.state === 'connecting').length >= 3, 'retries', 3000, b.log);
  b.sb.close();
  const closed = await pending;
  assert.deepEqual([closed.code, b.sb.state], [1000, 'closed']);
});

test('close() while the WebSocket module loads: getToken is never called', async () => {
  let calls = 0;
  const sb = new Switchboard({
    url: 'ws://127.0.0.1:9/ws',
    bizCode: 'b1',
    getToken: async () => {
      calls += 1;
      return 't';
    },
  });
  const pending = sb.connect().catch((e) => e);
  sb.close();
  const err = await pending;
  assert.equal(err.code, 1000);
  await sleep(50);
  assert.equal(calls, 0);
  assert.equal(sb.state, 'closed');
});

test('getToken counts against the connect timeout', async () => {
  const fake = fakeWebSocket();
  let calls = 0;
  const getToken = () => {
    calls += 1;
    return new Promise(() => {});
  };
  const { sb, log } = client({ url: 'ws://example.com/ws', bizCode: 'b1', WebSocket: fake.WebSocket, getToken, connectTimeoutMs: 150 });
  void sb.connect().catch(() => {});
  const started = Date.now();
  const lost = await reconnecting(log, 1);
  assert.match(lost.reason, /connect timeout: getToken did not answer in time/);
  assert.ok(lost.at - started >= 140 && lost.at - started < 1000, `after ${lost.at - started} ms`);
  await waitFor(() => calls === 2, 'getToken asked again', 3000, log);
  sb.close();
  assert.equal(fake.sockets.length, 0);
});

test('a fresh token only after a 401 where refusals are visible (ws), after any failed handshake where not (browsers)', async () => {
  for (const refusals of [true, false]) {
    const fake = fakeWebSocket({ refusals });
    let calls = 0;
    const getToken = async () => `t${++calls}`;
    const { sb, log } = client({ url: 'ws://example.com/ws', bizCode: 'b1', WebSocket: fake.WebSocket, getToken, backoffBaseMs: 20 });
    const connected = sb.connect();
    // ECONNREFUSED: a close 1006 before the upgrade.
    (await socket(fake, 0)).serverClose(1006);
    const s1 = await socket(fake, 1);
    assert.equal(calls, refusals ? 1 : 2, `refusals visible: ${refusals}`);
    assert.equal(s1.url.searchParams.get('token'), `t${calls}`);
    if (refusals) {
      s1.refuse(401, 'bad token');
      const r = await reconnecting(log, 2);
      assert.deepEqual([r.status, r.reason], [401, 'bad token']);
      const s2 = await socket(fake, 2);
      assert.equal(calls, 2);
      assert.equal(s2.url.searchParams.get('token'), 't2');
      s2.welcome();
    } else {
      s1.welcome();
    }
    await connected;
    sb.close();
  }
});

test('a refused handshake rejects connect() with a SwitchboardError carrying the status', async () => {
  const fake = fakeWebSocket({ refusals: true });
  const { sb, log } = client({ url: 'ws://example.com/ws', bizCode: 'b1', WebSocket: fake.WebSocket });
  const pending = sb.connect().catch((e) => e);
  (await socket(fake, 0)).refuse(403, 'origin not allowed');
  const err = await pending;
  assert.ok(err instanceof SwitchboardError);
  assert.deepEqual([err.code, err.status, err.msgId], [1006, 403, null]);
  assert.match(err.message, /origin not allowed/);
  assert.deepEqual([log.states.at(-1).state, log.states.at(-1).status], ['closed', 403]);
});

test('dead connection: found within interval + timeout of its last frame when the timeout is longer than the interval', async () => {
  const fake = fakeWebSocket();
  const { sb, log } = client({ url: 'ws://example.com/ws', bizCode: 'b1', WebSocket: fake.WebSocket, heartbeatTimeoutMs: 1500 });
  const connected = sb.connect();
  const s = await socket(fake, 0);
  s.welcome({ heartbeatSec: 1 });
  await connected;
  // The first heartbeat is answered; then the gateway goes silent.
  const hb = await waitFor(() => s.heartbeats()[0], 'a heartbeat', 3000);
  s.frame({ mode: 1, msgId: hb.msgId, ts: Date.now() });
  const lastFrameAt = Date.now();
  const lost = await reconnecting(log, 1);
  const took = lost.at - lastFrameAt;
  assert.equal(lost.code, 1006);
  assert.match(lost.reason, /heartbeat timeout: no frame for 1[5-9]\d\d ms/);
  // The next heartbeat 1 s after the answer, dead 1.5 s after that (when
  // only the heartbeat that armed the timer was checked: 3.5 s).
  assert.ok(took >= 2400 && took < 3200, `found dead ${took} ms after the last frame`);
  assert.equal(s.closedWith?.code, 'terminated');
  sb.close();
});

test('dead connection: a timeout shorter than the interval, and answered heartbeats keep the connection', async () => {
  const fake = fakeWebSocket();
  const a = client({ url: 'ws://example.com/ws', bizCode: 'b1', WebSocket: fake.WebSocket, heartbeatTimeoutMs: 100 });
  const connected = a.sb.connect();
  const s = await socket(fake, 0);
  const welcomedAt = Date.now();
  s.welcome({ heartbeatSec: 1 });
  await connected;
  const lost = await reconnecting(a.log, 1);
  const took = lost.at - welcomedAt;
  assert.ok(took >= 1090 && took < 1500, `found dead ${took} ms after the welcome`);
  a.sb.close();

  const live = fakeWebSocket();
  const b = client({ url: 'ws://example.com/ws', bizCode: 'b1', WebSocket: live.WebSocket, heartbeatTimeoutMs: 300 });
  const bConnected = b.sb.connect();
  const t = await socket(live, 0);
  const send = t.send.bind(t);
  t.send = (text) => {
    send(text);
    const f = JSON.parse(text);
    if (f.mode === 1) setTimeout(() => t.frame({ mode: 1, msgId: f.msgId, ts: Date.now() }), 50);
  };
  t.welcome({ heartbeatSec: 1 });
  await bConnected;
  await sleep(3300);
  assert.equal(b.sb.state, 'connected', JSON.stringify(b.log.states));
  assert.equal(t.heartbeats().length, 3);
  b.sb.close();
});

test('connections that die young keep backing off; a stable one resets the backoff', async () => {
  await withRandom(0.5, async () => {
    const fake = fakeWebSocket();
    const { sb, log } = client({
      url: 'ws://example.com/ws',
      bizCode: 'b1',
      WebSocket: fake.WebSocket,
      backoffBaseMs: 20,
      stableAfterMs: 300,
    });
    const connected = sb.connect();
    // welcome → 1012 at once, three times: the delays double (20 · 2^k / 2).
    for (let i = 0; i < 3; i++) {
      const s = await socket(fake, i);
      s.welcome();
      s.serverClose(1012, 'draining');
    }
    await connected;
    await socket(fake, 3);
    const delays = log.states.filter((s) => s.state === 'reconnecting').map((s) => s.delayMs);
    assert.deepEqual(delays, [10, 20, 40]);
    // Up longer than stableAfterMs: the next loss starts the backoff over.
    fake.sockets[3].welcome();
    await sleep(350);
    fake.sockets[3].serverClose(1012, 'draining');
    assert.equal((await reconnecting(log, 4)).delayMs, 10);
    assert.equal(log.states.filter((s) => s.state === 'connecting').at(-1)?.attempt, 1, 'attempts count from the last welcome');
    sb.close();
  });
});

test('4001 reconnects at once only after a stable connection; one right after the welcome backs off', async () => {
  await withRandom(0.5, async () => {
    const fake = fakeWebSocket();
    let calls = 0;
    const getToken = async () => `t${++calls}`;
    const { sb, log } = client({
      url: 'ws://example.com/ws',
      bizCode: 'b1',
      WebSocket: fake.WebSocket,
      getToken,
      backoffBaseMs: 20,
      stableAfterMs: 200,
    });
    const connected = sb.connect();
    const s0 = await socket(fake, 0);
    s0.welcome();
    await connected;
    await sleep(250);
    s0.serverClose(4001, 'token expired');
    assert.equal((await reconnecting(log, 1)).delayMs, 0, 'stable: at once');
    // A gateway that takes the fresh tokens and closes 4001 right away.
    for (let i = 1; i <= 3; i++) {
      const s = await socket(fake, i);
      assert.equal(s.url.searchParams.get('token'), `t${i + 1}`);
      s.welcome();
      s.serverClose(4001, 'token expired');
    }
    await socket(fake, 4);
    const delays = log.states.filter((s) => s.state === 'reconnecting').map((s) => s.delayMs);
    assert.deepEqual(delays, [0, 10, 20, 40]);
    sb.close();
  });
});

test('4009 is terminal, even right after an attempt the client gave up on', async () => {
  const fake = fakeWebSocket();
  const { sb, log } = client({ url: 'ws://example.com/ws', bizCode: 'b1', WebSocket: fake.WebSocket, connectTimeoutMs: 100, backoffBaseMs: 20 });
  const connected = sb.connect();
  // The first attempt gets no answer: given up.
  const s0 = await socket(fake, 0);
  const lost = await reconnecting(log, 1);
  assert.match(lost.reason, /connect timeout: no welcome in time/);
  assert.equal(s0.closedWith?.code, 'terminated');
  const s1 = await socket(fake, 1);
  s1.welcome();
  await connected;
  s1.serverClose(4009, 'replaced');
  const closed = await waitFor(() => log.states.find((s) => s.state === 'closed'), 'closed', 3000, log);
  assert.equal(closed.code, 4009);
  await sleep(200);
  assert.equal(fake.sockets.length, 2, 'no reconnect');
  assert.equal(sb.state, 'closed');
});
