// Connection lifecycle against a real standalone: terminal closes (4009,
// 4000, 1009, a refused handshake), 429 with Retry-After, and a gateway that
// stops answering (SIGSTOP) found dead by the heartbeat timeout, with sends
// queued (bounded) until the reconnect, which recovers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SwitchboardError } from '../../dist/switchboard.js';
import { api, client, env, sleep, uniqueBiz, waitFor, within, withContent } from '../support.mjs';

const url = env('SB_WS_URL');
const http = env('SB_API');

/** Asserts `log` ended closed with `code` and never tried again. */
async function assertClosedForGood(log, code) {
  const closed = await waitFor(() => log.states.find((s) => s.state === 'closed'), `close ${code}`);
  assert.equal(closed.code, code, JSON.stringify(log.states));
  // Longer than the whole backoff window of these clients (base 50 ms).
  await sleep(700);
  assert.equal(log.states.at(-1).state, 'closed', JSON.stringify(log.states));
  assert.equal(log.states.filter((s) => s.state === 'connecting').length, 1, 'no reconnect attempt');
  return closed;
}

test('4009: replaced by a newer connection, the older does not reconnect', async () => {
  const biz = uniqueBiz();
  const old = client({ url, bizCode: biz, clientId: 'same', backoffBaseMs: 50 });
  await old.sb.connect();
  const newer = client({ url, bizCode: biz, clientId: 'same', backoffBaseMs: 50 });
  await newer.sb.connect();
  await assertClosedForGood(old.log, 4009);
  assert.equal(newer.sb.state, 'connected');
  const r = await newer.sb.send({ clientId: 'same' }, 'still here');
  assert.equal(r.recipients, 1, 'one live connection');
});

test('4000: closed by the API, no reconnect', async () => {
  const biz = uniqueBiz();
  const a = client({ url, bizCode: biz, clientId: 'a', backoffBaseMs: 50 });
  await a.sb.connect();
  const res = await api(http, biz, 'close_client', { clientId: 'a' });
  assert.equal(res.status, 200);
  await assertClosedForGood(a.log, 4000);
});

test('1009: a frame over the hard limit closes for good; its send fails', async () => {
  const biz = uniqueBiz();
  const a = client({ url, bizCode: biz, clientId: 'a', backoffBaseMs: 50, maxFrameBytes: 4 << 20 });
  await a.sb.connect();
  const err = await a.sb.send({ broadcast: true }, 'x'.repeat(1100000)).catch((e) => e);
  assert.equal(err.code, 'connection_lost');
  await assertClosedForGood(a.log, 1009);
});

test('a handshake refused with 400 is terminal; connect() rejects', async () => {
  const a = client({ url, bizCode: 'not a valid bizCode', backoffBaseMs: 50 });
  const err = await a.sb.connect().catch((e) => e);
  assert.ok(err instanceof SwitchboardError, String(err));
  assert.match(err.message, /closed before connecting/);
  assert.deepEqual([err.code, err.status], [1006, 400]);
  const closed = a.log.states.at(-1);
  assert.deepEqual([closed.state, closed.code, closed.status], ['closed', 1006, 400]);
  assert.match(closed.reason, /bizCode/);
});

test('429: the next attempt waits Retry-After plus jitter', async () => {
  const biz = uniqueBiz();
  const limits = await api(http, biz, 'set_limits', { maxConnections: 1 });
  assert.equal(limits.status, 200, JSON.stringify(limits.body));
  const first = client({ url, bizCode: biz, clientId: 'first' });
  await first.sb.connect();
  const second = client({ url, bizCode: biz, clientId: 'second', backoffBaseMs: 100 });
  void second.sb.connect().catch(() => {});
  const wait = await waitFor(() => second.log.states.find((s) => s.state === 'reconnecting'), 'the 429');
  assert.equal(wait.status, 429);
  assert.ok(wait.delayMs >= 5000 && wait.delayMs < 5100, `delay ${wait.delayMs}: Retry-After 5 s + jitter`);
  second.sb.close();
  assert.equal(second.log.states.filter((s) => s.state === 'connecting').length, 1);
});

test('a gateway that stops answering is found dead by the heartbeat timeout; queued sends go out after the reconnect', async () => {
  const pid = Number(env('SB_PID'));
  const biz = uniqueBiz();
  const a = client({
    url,
    bizCode: biz,
    clientId: 'a',
    heartbeatTimeoutMs: 1500,
    connectTimeoutMs: 1500,
    backoffBaseMs: 200,
    backoffCapMs: 800,
    queueLimit: 2,
    // The queued sends below wait for the gateway's return (up to ~20 s).
    sendTimeoutMs: 60000,
  });
  await a.sb.connect();
  let queued;
  const stopped = Date.now();
  process.kill(pid, 'SIGSTOP');
  try {
    const lost = await waitFor(() => a.log.states.find((s) => s.state === 'reconnecting'), 'the dead connection', 6000);
    const took = lost.at - stopped;
    assert.equal(lost.code, 1006);
    assert.match(lost.reason, /heartbeat timeout/);
    // The next heartbeat within 1 s (heartbeatSec), then 1.5 s without a
    // frame: at most 2.5 s (plus scheduling).
    assert.ok(took >= 1400 && took < 3200, `found dead after ${took} ms`);
    // Sends wait (up to queueLimit); one more is refused at once.
    queued = [a.sb.send({ clientId: 'a' }, 'queued 1'), a.sb.send({ clientId: 'a' }, 'queued 2')].map((p) =>
      p.catch((e) => e),
    );
    const over = await a.sb.send({ clientId: 'a' }, 'queued 3').catch((e) => e);
    assert.equal(over.code, 'queue_full');
    // Attempts keep failing while the gateway is stopped (connect timeout).
    await waitFor(() => a.log.states.filter((s) => s.state === 'connecting').length >= 3, 'retries', 8000);
    // Resume the gateway while the client waits between attempts, so that
    // the gateway first works through the attempts the client gave up on
    // (still in its accept queue). Each of those must be dropped by the
    // gateway, not registered: a 4009 from one would be terminal (SPEC §2)
    // and fail this test.
    const longWait = new Promise((resolve) => {
      const off = a.sb.on('state', (s) => {
        if (s.state === 'reconnecting' && s.delayMs >= 400) {
          off();
          resolve();
        }
      });
    });
    await within(longWait, 20000, 'a wait of 400 ms or more');
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  await waitFor(() => a.sb.state === 'connected', 'the reconnect', 15000, a.log);
  const replies = await Promise.all(queued);
  const states = JSON.stringify(a.log.states);
  assert.deepEqual(a.log.recovered.at(-1)?.recovered, true, states);
  assert.deepEqual(
    replies.map((r) => r.recipients),
    [1, 1],
    states,
  );
  await waitFor(() => withContent(a.log, 'queued 2').length === 1, 'the queued sends delivered');
  assert.equal(withContent(a.log, 'queued 1').length, 1);
});
