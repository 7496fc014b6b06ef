// The console keeps every check (console_browser.rs starts a standalone in
// JWT mode whose origin allow-list names its own origin, SB_CONSOLE):
// strict headers on every page, a valid token connects, a forged one does
// not, and the same page served under another origin (localhost instead
// of 127.0.0.1) is refused at the handshake. The same two refusals seen from
// Node, where the status shows: 403 for the origin, 401 for the token.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { after, before, test } from 'node:test';
import { client, env, launch, noProblems, shot, state, timeline } from './support.mjs';

/** How long a refused client is watched for a connection that must not come. */
const REFUSED_FOR_MS = 3000;

let browser;
let alice;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

/** A WebSocket opening handshake (RFC 6455 §4.1) to the console's
 * gateway with `origin` and `token`: { status, body } of the answer (101
 * and an empty body when it upgraded; the socket is dropped at once). */
function handshake({ origin, token }) {
  const ws = new URL('../ws', env('SB_CONSOLE'));
  ws.search = new URLSearchParams({ bizCode: 'd1', clientId: 'alice', group: 'room', token }).toString();
  return new Promise((resolve, reject) => {
    const req = request(ws, {
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
        Origin: origin,
      },
      timeout: 5000,
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode, body: '' });
    });
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('timeout', () => req.destroy(new Error('no answer to the handshake')));
    req.on('error', reject);
    req.end();
  });
}

/** Watches `page` for REFUSED_FOR_MS: it retries, and never connects. */
async function refused(page) {
  await state(page, 'reconnecting');
  await page.waitForTimeout(REFUSED_FOR_MS);
  const states = (await timeline(page)).map((t) => t.state);
  assert.ok(!states.includes('connected'), `connected after all: ${states.join(' → ')}`);
  assert.ok(states.includes('reconnecting'), states.join(' → '));
}

test('the client view is served with a strict policy and connects with a valid JWT', async () => {
  const r = await client(browser, `${env('SB_CONSOLE')}client.html`, { clientId: 'alice', groups: 'room', token: env('SB_TOKEN') });
  alice = r.page;
  const h = r.res.headers();
  assert.equal(h['content-type'], 'text/html; charset=utf-8');
  assert.match(h['content-security-policy'], /script-src 'self';/);
  assert.match(h['content-security-policy'], /default-src 'none'/);
  assert.equal(h['x-content-type-options'], 'nosniff');
  await state(alice, 'connected');
  assert.equal((await alice.locator('#who').innerText()).trim(), 'alice');
  await shot(alice, '10-jwt-connected');
  noProblems(alice);
});

test('a forged token is refused', async () => {
  const { page } = await client(browser, `${env('SB_CONSOLE')}client.html`, { clientId: 'alice', groups: 'room', token: env('SB_FORGED_TOKEN') });
  await refused(page);
  await shot(page, '11-forged-token-refused');
  await page.click('#disconnect');
  await state(alice, 'connected');
});

test('the console under an origin the allow-list does not name is refused, even with a valid token', async () => {
  const { page } = await client(browser, `${env('SB_OTHER_ORIGIN_CONSOLE')}client.html`, { clientId: 'alice', groups: 'room', token: env('SB_TOKEN') });
  await refused(page);
  await shot(page, '12-other-origin-refused');
  await page.click('#disconnect');
  // Had it been let in, alice's own connection would have been replaced (4009).
  await state(alice, 'connected');
  noProblems(alice);
});

test('from Node, where the status shows: a foreign Origin gets 403, a forged token 401', async () => {
  const own = new URL(env('SB_CONSOLE')).origin;
  const foreign = new URL(env('SB_OTHER_ORIGIN_CONSOLE')).origin;
  const other = await handshake({ origin: foreign, token: env('SB_TOKEN') });
  assert.equal(other.status, 403, other.body);
  assert.match(JSON.parse(other.body).msg, /origin not allowed/);
  const forged = await handshake({ origin: own, token: env('SB_FORGED_TOKEN') });
  assert.equal(forged.status, 401, forged.body);
  assert.equal(JSON.parse(forged.body).code, 401);
  // Neither reached alice's connection (a 101 would have replaced it: 4009).
  await state(alice, 'connected');
});
