// The console on a cluster (console_browser.rs starts it): NATS, a router
// (SB_ROUTER, admin view on), three edges (SB_EDGES, client view on), nginx
// in front of the first two (SB_NGINX; its process group SB_NGINX_GROUP).
//
// alice opens the client view through nginx, bob on the third edge; they
// chat; the admin view shows both; bob acks (with its ack button) a unicast
// asking for a receipt and an API send with ackTimeoutMs, and alice's page
// and the admin view show the receipts; then nginx is stalled, alice's
// edge killed and three messages sent to her; nginx goes on and alice's
// page shows reconnecting → connected → recovered, with the three messages.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { client, env, frame, launch, noProblems, open, send, shot, state, timeline } from './support.mjs';

const edges = JSON.parse(env('SB_EDGES'));
const nginxGroup = Number(env('SB_NGINX_GROUP'));
let browser;
let alice;
let bob;
let admin;
let aliceNode;

before(async () => {
  browser = await launch();
});

after(async () => {
  try {
    process.kill(-nginxGroup, 'SIGCONT');
  } catch {
    // Already gone.
  }
  await browser?.close();
});

test('two browsers on two edges connect and see each other come online', async () => {
  ({ page: alice } = await client(browser, `${env('SB_NGINX')}/console/client.html`, { clientId: 'alice', groups: 'room' }));
  await state(alice, 'connected');
  aliceNode = (await alice.locator('#node').innerText()).trim();
  const bobEdge = edges[2];
  ({ page: bob } = await client(browser, `${bobEdge.http}/console/client.html`, { clientId: 'bob', groups: 'room' }));
  await state(bob, 'connected');
  const bobNode = (await bob.locator('#node').innerText()).trim();
  assert.ok(bobNode.startsWith(`${bobEdge.name}-`), `bob on ${bobNode}`);
  assert.ok(aliceNode.startsWith('edge1-') || aliceNode.startsWith('edge2-'), `alice through nginx on ${aliceNode}`);
  assert.match(await frame(alice, 400, 'bob'), /online/);
  await alice.locator('#presence', { hasText: 'bob' }).waitFor();
  await shot(alice, '01-alice-connected');
  await shot(bob, '01-bob-connected');
});

test('they chat: unicast, group and broadcast', async () => {
  assert.match(await send(alice, 100, 'bob', 'hi bob, alice here'), /delivered to 1/);
  assert.match(await frame(bob, 100, 'hi bob, alice here'), /alice/);
  assert.match(await send(bob, 200, 'room', 'hello room from bob'), /delivered to 1/);
  assert.match(await frame(alice, 200, 'hello room from bob'), /room/);
  assert.match(await send(alice, 300, '', 'broadcast from alice'), /delivered to 1/);
  assert.match(await frame(bob, 300, 'broadcast from alice'), /alice/);
  await shot(alice, '02-alice-chat');
  await shot(bob, '02-bob-chat');
  noProblems(alice, bob);
});

test('the admin view shows both online, per group and per node, and sends through the API', async () => {
  ({ page: admin } = await open(browser, `${env('SB_ROUTER')}/console/`));
  await admin.fill('#key', env('SB_API_KEY'));
  await admin.fill('#biz', 'd1');
  await admin.click('#load');
  await admin.locator('#online tr[data-client="alice"]').waitFor();
  await admin.locator('#online tr[data-client="bob"]').waitFor();
  assert.equal(await admin.locator('#online-count').innerText(), '2');
  await admin.locator('#groups tr[data-group="room"]', { hasText: '2' }).waitFor();
  await admin.locator(`#nodes tr[data-node="${aliceNode}"]`).waitFor();
  const counts = await admin.locator('#nodes tr[data-node]').evaluateAll((rows) =>
    rows.map((r) => [r.dataset.node, r.cells[1]?.textContent]),
  );
  assert.equal(counts.length, 2, `nodes: ${JSON.stringify(counts)}`);
  assert.deepEqual(counts.map(([, n]) => n), ['1', '1'], `nodes: ${JSON.stringify(counts)}`);
  await admin.selectOption('#group-filter', 'room');
  await admin.locator('#online tr[data-client="bob"]').waitFor();

  await admin.check('input[name="kind"][value="send_to_group"]');
  await admin.fill('#target', 'room');
  await admin.fill('#msg', 'maintenance at 22:00');
  await admin.click('#send');
  await admin.locator('#calls tr[data-call="send_to_group"]', { hasText: 'recipients' }).waitFor();
  for (const p of [alice, bob]) assert.match(await frame(p, 200, 'maintenance at 22:00'), /console/);
  await shot(admin, '03-admin-both-online');
  noProblems(admin);
});

test('delivery receipts: bob acks alice\'s unicast with its ack button, and an API send with ackTimeoutMs', async () => {
  await alice.check('input[name="mode"][value="100"]');
  await alice.check('#want-receipt');
  assert.match(await send(alice, 100, 'bob', 'please confirm, bob'), /delivered to 1/);
  await alice.uncheck('#want-receipt');
  const asked = bob.locator('#frames tr[data-mode="100"]', { hasText: 'please confirm, bob' }).first();
  await asked.waitFor();
  assert.match(await asked.innerText(), /asks for an ack/);
  await asked.locator('button.ack').click();
  assert.match(await frame(bob, 3, 'ack'), /ack console-/);
  assert.match(await frame(alice, 4, 'acked [bob]'), /unacked \[\]/);

  await admin.check('input[name="kind"][value="send_to_client"]');
  await admin.fill('#target', 'bob');
  await admin.fill('#msg', 'did you read the terms?');
  await admin.fill('#ack-timeout', '10000');
  await admin.click('#send');
  const fromApi = bob.locator('#frames tr[data-mode="100"]', { hasText: 'did you read the terms?' }).first();
  await fromApi.waitFor();
  await fromApi.locator('button.ack').click();
  const call = admin.locator('#calls tr[data-call="send_to_client"]', { hasText: 'acked' }).first();
  await call.waitFor();
  assert.match(await call.innerText(), /"acked":\["bob"\],"unacked":\[\]/);
  await admin.fill('#ack-timeout', '');
  await shot(alice, '03b-alice-receipt');
  await shot(bob, '03b-bob-acked');
  await shot(admin, '03b-admin-acked');
  noProblems(admin, alice, bob);
});

test('alice\'s edge dies; her page reconnects to another edge and recovers what was sent meanwhile', async () => {
  const dead = edges.find((e) => aliceNode.startsWith(`${e.name}-`));
  assert.ok(dead, `no edge named like ${aliceNode}`);
  // nginx stalls first, so the three sends surely happen while alice has
  // no connection: her old one ends, and her reconnect starts, only when
  // nginx goes on.
  process.kill(-nginxGroup, 'SIGSTOP');
  try {
    process.kill(dead.pid, 'SIGKILL');
    await send(bob, 100, 'alice', 'while you were away: 1 (unicast)');
    await send(bob, 200, 'room', 'while you were away: 2 (group)');
    await send(bob, 300, '', 'while you were away: 3 (broadcast)');
    await shot(bob, '04-bob-sends-while-alice-is-away');
  } finally {
    process.kill(-nginxGroup, 'SIGCONT');
  }
  await alice.locator('#recovered[data-recovered="true"]').waitFor();
  await state(alice, 'connected');
  const newNode = (await alice.locator('#node').innerText()).trim();
  assert.notEqual(newNode, aliceNode, 'alice reconnected to another edge');
  assert.match(await frame(alice, 100, 'while you were away: 1'), /bob/);
  assert.match(await frame(alice, 200, 'while you were away: 2'), /room/);
  assert.match(await frame(alice, 300, 'while you were away: 3'), /bob/);

  // The timeline after the first connect: reconnecting → … → connected → recovered.
  const states = (await timeline(alice)).map((t) => t.state);
  const first = states.indexOf('connected');
  const rest = states.slice(first + 1);
  const at = (s, from) => rest.indexOf(s, from);
  const r = at('reconnecting', 0);
  const c = at('connected', r);
  const v = at('recovered', c);
  assert.ok(r >= 0 && c > r && v > c, `timeline: ${states.join(' → ')}`);
  await shot(alice, '05-alice-recovered');
  noProblems(alice, bob);
  aliceNode = newNode;
});

test('the admin view follows alice to her new edge and closes bob', async () => {
  await admin.locator(`#nodes tr[data-node="${aliceNode}"]`).waitFor();
  await admin.selectOption('#group-filter', '');
  await admin.locator('#online tr[data-client="alice"]').waitFor();
  await shot(admin, '06-admin-after-the-edge-died');
  await admin.click('#online tr[data-client="bob"] button');
  await state(bob, 'closed');
  assert.match(await bob.locator('#state').innerText(), /4000/);
  await admin.locator('#online tr[data-client="bob"]').waitFor({ state: 'detached' });
  assert.match(await frame(alice, 400, ['bob', 'offline']), /bob[\s\S]*offline/);
  await shot(bob, '07-bob-closed-by-the-admin');
  noProblems(admin, alice, bob);
});
