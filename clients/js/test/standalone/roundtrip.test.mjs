// Round trips of every mode against a real standalone: client sends (100,
// 200, 300) with their replies and deliveries, API sends, presence notices,
// heartbeats, the typed errors of refused sends, and delivery receipts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SwitchboardError } from '../../dist/switchboard.js';
import { api, checkEveryMode, client, env, uniqueBiz } from '../support.mjs';

const url = env('SB_WS_URL');
const http = env('SB_API');

test('every mode, from clients and from the API, reaches exactly who it should', async () => {
  await checkEveryMode([url, url, url], http, 1);
});

test('upstream() resolves once the gateway stored the message for the backend', async () => {
  const a = client({ url, bizCode: uniqueBiz(), clientId: 'a' });
  await a.sb.connect();
  assert.deepEqual(await a.sb.upstream({ typing: true }, { msgId: 'u1' }), { msgId: 'u1' });
  const big = await a.sb.upstream('x'.repeat(70000)).catch((e) => e);
  assert.equal(big.code, 1003);
  a.sb.close();
});

test('refused sends reject with a typed error carrying the code', async () => {
  const biz = uniqueBiz();
  const a = client({ url, bizCode: biz, clientId: 'a' });
  await a.sb.connect();

  // 1004: a target never seen.
  const offline = await a.sb.send({ clientId: 'nobody' }, 'hello?').catch((e) => e);
  assert.ok(offline instanceof SwitchboardError, String(offline));
  assert.equal(offline.code, 1004);
  assert.equal(offline.message, 'target is not online');

  // 1003: over the frame limit, refused before it is written.
  const big = await a.sb.send({ broadcast: true }, 'x'.repeat(70000)).catch((e) => e);
  assert.equal(big.code, 1003);

  // 1005: over 50 sends/s with a burst of 100.
  const results = await Promise.allSettled(Array.from({ length: 120 }, (_, i) => a.sb.send({ broadcast: true }, i)));
  const codes = results.map((r) => (r.status === 'fulfilled' ? 0 : r.reason.code));
  assert.ok(codes.includes(1005), `no 1005 among ${codes}`);
  assert.ok(codes.every((c) => c === 0 || c === 1005), `unexpected ${codes}`);
  assert.equal(a.sb.state, 'connected');

  // A closed client refuses at once.
  a.sb.close();
  const closed = await a.sb.send({ broadcast: true }, 1).catch((e) => e);
  assert.equal(closed.code, 'closed');
});

test('delivery receipts: message.ack() answers an API send with ackTimeoutMs, autoAck a client send with ack', async () => {
  const biz = uniqueBiz();
  const a = client({ url, bizCode: biz, clientId: 'a' });
  const b = client({ url, bizCode: biz, clientId: 'b', autoAck: true });
  await a.sb.connect();
  await b.sb.connect();

  // The app acks once it has handled the message.
  a.sb.once('message', (m) => m.ack?.());
  const call = await api(http, biz, 'send_to_client', { clientId: 'a', msg: 'confirm', ackTimeoutMs: 10000 });
  assert.equal(call.status, 200, JSON.stringify(call.body));
  assert.deepEqual([call.body.data.acked, call.body.data.unacked], [['a'], []]);

  // b acks by itself; a gets the receipt.
  const receipts = [];
  a.sb.on('receipt', (r) => receipts.push(r));
  const sent = await a.sb.send({ clientId: 'b' }, 'got it?', { ack: true });
  assert.equal(sent.recipients, 1);
  const receipt = await sent.receipt;
  assert.deepEqual(receipt, { msgId: sent.msgId, acked: ['b'], unacked: [] });
  assert.deepEqual(receipts, [receipt]);
});
