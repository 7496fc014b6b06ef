// Shared helpers of the integration tests. They run against real gateway
// processes that crates/switchboard/tests/sdk_js.rs starts and describes in
// the environment (SB_*); run them with
// `cargo test -p switchboard --test sdk_js`.
import { after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { Switchboard } from '../dist/switchboard.js';

/** An environment variable the Rust harness sets. */
export function env(name) {
  const v = process.env[name];
  if (v === undefined || v === '') {
    throw new Error(`${name} is not set: these tests run from \`cargo test -p switchboard --test sdk_js\``);
  }
  return v;
}

/** A bizCode of its own per test, so tests never see each other's frames. */
export function uniqueBiz(prefix = 't') {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

/** `POST /api/websocket/<call>` as tenant `biz`: { status, body }. */
export async function api(base, biz, call, body) {
  const res = await fetch(`${base}/api/websocket/${call}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      systemId: biz,
      authorization: `Bearer ${env('SB_API_KEY')}`,
    },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

const clients = [];
after(() => {
  for (const c of clients) c.close();
});

/** A client (closed after the test file) and what it records: messages,
 * presence notices, state changes (with a timestamp) and recovered events. */
export function client(options) {
  const sb = new Switchboard(options);
  clients.push(sb);
  const log = { messages: [], presence: [], states: [], recovered: [] };
  sb.on('message', (m) => log.messages.push(m));
  sb.on('presence', (p) => log.presence.push(p));
  sb.on('state', (s) => log.states.push({ ...s, at: Date.now() }));
  sb.on('recovered', (r) => log.recovered.push(r));
  return { sb, log };
}

/** Polls `check` every 10 ms until it returns a truthy value (returned), or
 * fails with `what` (and `log`'s state changes, if given) after `ms`. */
export async function waitFor(check, what, ms = 15000, log = undefined) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > deadline) {
      const states = log === undefined ? '' : `; states: ${JSON.stringify(log.states)}`;
      assert.fail(`timed out after ${ms} ms waiting for ${what}${states}`);
    }
    await sleep(10);
  }
}

/** `promise`, or a failure naming `what` after `ms` (the timer is cleared
 * either way, so it does not keep the test process alive). */
export async function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** An HS256 JWT of `claims`. */
export function jwt(claims, secret) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

/** The messages of `log` whose content is `content` (by JSON text). */
export function withContent(log, content) {
  const want = JSON.stringify(content);
  return log.messages.filter((m) => JSON.stringify(m.content) === want);
}

/** Asserts `log` got each of `contents` exactly once, in increasing `seq`. */
export function assertExactlyOnce(log, contents, who) {
  for (const c of contents) {
    assert.equal(withContent(log, c).length, 1, `${who} got ${JSON.stringify(c)} ${withContent(log, c).length} times`);
  }
  const seqs = log.messages.map((m) => m.seq).filter((s) => s !== undefined);
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `${who}: seq ${seqs[i]} after ${seqs[i - 1]}`);
}

/**
 * Every mode end to end: clients a and b in group `room`, c in none,
 * connected to `urls[0..2]`: unicast, group send and broadcast with their
 * replies and deliveries, the API's three sends through `http`, presence
 * notices, and (heartbeatSec ≤ 2) heartbeats keeping c connected past the
 * idle timeout.
 */
export async function checkEveryMode(urls, http, heartbeatSec) {
  const biz = uniqueBiz();
  const a = client({ url: urls[0], bizCode: biz, clientId: 'a', groups: ['room'] });
  const b = client({ url: urls[1], bizCode: biz, clientId: 'b', groups: ['room'] });
  const c = client({ url: urls[2], bizCode: biz, clientId: 'c' });
  const welcomes = await Promise.all([a.sb.connect(), b.sb.connect(), c.sb.connect()]);
  assert.deepEqual(
    welcomes.map((w) => [w.clientId, w.bizCode, w.groups]),
    [
      ['a', biz, ['room']],
      ['b', biz, ['room']],
      ['c', biz, []],
    ],
  );
  for (const w of welcomes) {
    assert.equal(typeof w.node, 'string');
    assert.equal(w.heartbeatSec, heartbeatSec);
    assert.equal(typeof w.epoch, 'string', 'history is on');
    assert.ok(Number.isSafeInteger(w.seq));
  }
  assert.equal(a.sb.state, 'connected');

  // Mode 100: only the target.
  const uni = await a.sb.send({ clientId: 'b' }, { text: 'to b' });
  assert.equal(uni.recipients, 1);
  const got = await waitFor(() => withContent(b.log, { text: 'to b' })[0], 'the unicast');
  assert.equal(got.mode, 100);
  assert.equal(got.from, 'a');
  assert.equal(got.msgId, uni.msgId);
  assert.ok(Number.isSafeInteger(got.seq) && got.seq > welcomes[1].seq);
  assert.ok(Math.abs(got.ts - Date.now()) < 60000);

  // Mode 200: every other member, with the group.
  const grp = await a.sb.send({ group: 'room' }, 'to the room');
  assert.equal(grp.recipients, 1);
  const g = await waitFor(() => withContent(b.log, 'to the room')[0], 'the group send');
  assert.deepEqual([g.mode, g.from, g.group], [200, 'a', 'room']);

  // Mode 300: every other client of the bizCode.
  const all = await b.sb.send({ broadcast: true }, [1, 2, 3]);
  assert.equal(all.recipients, 2);
  for (const who of [a, c]) {
    const m = await waitFor(() => withContent(who.log, [1, 2, 3])[0], 'the broadcast');
    assert.deepEqual([m.mode, m.from], [300, 'b']);
  }

  // API sends arrive as 100/200/300 from sendUserId with {code,msg,data}.
  const calls = [
    ['send_to_client', { clientId: 'c', sendUserId: 'orders', code: 0, msg: 'new order', data: { id: 42 } }, 100, [c]],
    ['send_to_group', { groupName: 'room', sendUserId: 'ops', code: 0, msg: 'deploy', data: null }, 200, [a, b]],
    ['send_to_system', { sendUserId: 'ops', code: 0, msg: 'maintenance', data: 'at 22:00' }, 300, [a, b, c]],
  ];
  for (const [call, body, mode, to] of calls) {
    const res = await api(http, biz, call, body);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    for (const who of to) {
      const content = { code: body.code, msg: body.msg, data: body.data };
      const m = await waitFor(() => withContent(who.log, content)[0], `${call} at ${who.sb.clientId}`);
      assert.deepEqual([m.mode, m.from, m.msgId], [mode, body.sendUserId, res.body.data.messageId]);
    }
  }

  // Nobody got their own group send or broadcast, nor what was not theirs.
  assert.equal(withContent(a.log, 'to the room').length, 0);
  assert.equal(withContent(b.log, [1, 2, 3]).length, 0);
  assert.equal(withContent(c.log, 'to the room').length, 0);
  assert.equal(withContent(a.log, { text: 'to b' }).length, 0);
  for (const who of [a, b, c]) {
    const seqs = who.log.messages.map((m) => m.seq);
    assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), 'in seq order');
  }

  // Presence (mode 400): a member joining and leaving the room.
  const d = client({ url: urls[0], bizCode: biz, clientId: 'd', groups: ['room'] });
  await d.sb.connect();
  for (const who of [a, b]) {
    await waitFor(() => who.log.presence.find((p) => p.clientId === 'd' && p.event === 'online'), 'online');
  }
  d.sb.close();
  const off = await waitFor(() => a.log.presence.find((p) => p.clientId === 'd' && p.event === 'offline'), 'offline');
  assert.equal(off.group, 'room');
  assert.deepEqual(d.log.states.at(-1).state, 'closed');
  assert.equal(d.log.states.at(-1).code, 1000);

  // Heartbeats (mode 1) keep the connection: the server's idle timeout is
  // 3 × heartbeatSec, and c sends nothing else for longer than that (where
  // that is short enough for a test).
  if (heartbeatSec > 2) return;
  const before = c.log.states.length;
  await sleep(heartbeatSec * 3500);
  assert.equal(c.log.states.length, before, 'no reconnect: the heartbeats were answered');
  assert.equal(c.sb.state, 'connected');
}
