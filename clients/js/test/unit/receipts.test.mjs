// Delivery receipts with a fake WebSocket (test/fake.mjs) and no server: a
// delivery asking for an ack gets message.ack() (once, mode 3), autoAck
// acks by itself, a send with ack resolves with a receipt promise that the
// mode-4 frame settles (also a `receipt` event), and one whose connection
// ends rejects with connection_lost.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SwitchboardError } from '../../dist/switchboard.js';
import { fakeWebSocket } from '../fake.mjs';
import { client, waitFor } from '../support.mjs';

async function connected(opts = {}) {
  const fake = fakeWebSocket();
  const { sb, log } = client({ url: 'ws://example.com/ws', bizCode: 'b1', WebSocket: fake.WebSocket, ...opts });
  const connecting = sb.connect();
  const ws = await waitFor(() => fake.sockets[0], 'socket', 3000);
  ws.welcome();
  await connecting;
  return { sb, ws, log };
}

const acks = (ws) => ws.sent.filter((f) => f.mode === 3);

test('a delivery that asks for an ack has ack(), which sends mode 3 once; others have none', async () => {
  const { sb, ws } = await connected();
  const got = [];
  sb.on('message', (m) => got.push(m));
  ws.frame({ mode: 100, msgId: 'm1', from: 'desk', content: 'confirm?', ts: 1, ack: true, seq: 5 });
  ws.frame({ mode: 100, msgId: 'm2', from: 'desk', content: 'fyi', ts: 2 });
  assert.equal(got.length, 2);
  assert.equal(typeof got[0].ack, 'function');
  assert.equal(got[1].ack, undefined);
  assert.equal(got[0].seq, 5);
  assert.deepEqual(acks(ws), [], 'no auto-ack by default');
  got[0].ack();
  got[0].ack();
  assert.deepEqual(acks(ws), [{ mode: 3, msgId: 'm1' }]);
  sb.close();
});

test('autoAck acknowledges after the message listeners ran', async () => {
  const { sb, ws } = await connected({ autoAck: true });
  let sentWhenHandled;
  sb.on('message', (m) => {
    if (m.msgId === 'm1') sentWhenHandled = acks(ws).length;
  });
  ws.frame({ mode: 100, msgId: 'm1', from: 'desk', content: 1, ts: 1, ack: true });
  ws.frame({ mode: 200, msgId: 'g1', from: 'desk', group: 'room', content: 2, ts: 2 });
  assert.equal(sentWhenHandled, 0);
  assert.deepEqual(acks(ws), [{ mode: 3, msgId: 'm1' }]);
  sb.close();
});

test('a send with ack: the reply resolves it, the mode-4 frame its receipt (and a receipt event)', async () => {
  const { sb, ws } = await connected();
  const events = [];
  sb.on('receipt', (r) => events.push(r));
  const sending = sb.send({ clientId: 'c2' }, 'call me?', { msgId: 'k1', ack: true });
  await waitFor(() => ws.sent.find((f) => f.mode === 100), 'the send', 3000);
  assert.deepEqual(ws.sent.at(-1), { mode: 100, msgId: 'k1', targetClientId: 'c2', content: 'call me?', ack: true });
  ws.frame({ mode: 2, msgId: 'k1', code: 0, msg: 'success', data: { recipients: 1 } });
  const result = await sending;
  assert.equal(result.recipients, 1);
  ws.frame({ mode: 4, msgId: 'k1', acked: ['c2'], unacked: [] });
  assert.deepEqual(await result.receipt, { msgId: 'k1', acked: ['c2'], unacked: [] });
  assert.deepEqual(events, [{ msgId: 'k1', acked: ['c2'], unacked: [] }]);
  // ack is for a unicast only.
  await assert.rejects(sb.send({ group: 'room' }, 1, { ack: true }), TypeError);
  sb.close();
});

test('a receipt that arrives before the reply still settles; a lost connection rejects a pending one', async () => {
  const { sb, ws } = await connected({ backoffBaseMs: 10 });
  const sending = sb.send({ clientId: 'c2' }, 1, { msgId: 'k2', ack: true });
  await waitFor(() => ws.sent.find((f) => f.mode === 100), 'the send', 3000);
  ws.frame({ mode: 4, msgId: 'k2', acked: [], unacked: ['c2'] });
  ws.frame({ mode: 2, msgId: 'k2', code: 0, msg: 'success', data: { recipients: 1 } });
  assert.deepEqual(await (await sending).receipt, { msgId: 'k2', acked: [], unacked: ['c2'] });

  const next = sb.send({ clientId: 'c2' }, 2, { msgId: 'k3', ack: true });
  await waitFor(() => ws.sent.find((f) => f.msgId === 'k3'), 'the send', 3000);
  ws.frame({ mode: 2, msgId: 'k3', code: 0, msg: 'success', data: { recipients: 1 } });
  const { receipt } = await next;
  ws.serverClose(1012, 'draining');
  const err = await receipt.catch((e) => e);
  assert.ok(err instanceof SwitchboardError, String(err));
  assert.equal(err.code, 'connection_lost');
  sb.close();
});
