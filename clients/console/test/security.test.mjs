// The console keeps every check (console_browser.rs starts a standalone in
// JWT mode whose origin allow-list names its own origin, SB_CONSOLE):
// strict headers on every page, a valid token connects, a forged one does
// not, and the same page served under another origin (localhost instead
// of 127.0.0.1) is refused at the handshake.

import assert from 'node:assert/strict';
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
