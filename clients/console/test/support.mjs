// What the console's browser tests share: Debian's Chromium through
// playwright-core (it downloads nothing: the browser is SB_CHROMIUM), a
// client view page with its form filled, waits on what the page shows,
// and screenshots into SB_SHOTS.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/** How long a wait for something the page should show may take. */
export const PATIENCE_MS = 15000;

export function env(name) {
  const v = process.env[name];
  assert.ok(v, `${name} is not set (the Rust test console_browser.rs sets it)`);
  return v;
}

export async function launch() {
  return chromium.launch({ executablePath: env('SB_CHROMIUM'), timeout: 30000 });
}

/** A new browser context (its own storage, like another person's browser)
 * with one page at `url`; page errors and CSP violations are collected in
 * `page.problems`. */
export async function open(browser, url) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(PATIENCE_MS);
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) page.problems.push(m.text());
  });
  const res = await page.goto(url);
  assert.equal(res?.status(), 200, `GET ${url}`);
  return { page, res };
}

/** Opens the client view at `url` and connects as `clientId` in `groups`. */
export async function client(browser, url, { clientId, groups = '', token = '' }) {
  const { page, res } = await open(browser, url);
  await page.fill('#client-id', clientId);
  await page.fill('#groups', groups);
  if (token) await page.fill('#token', token);
  await page.click('#connect');
  return { page, res };
}

export async function state(page, want) {
  await page.locator(`#state[data-state="${want}"]`).waitFor();
}

/** Sends from the client view: mode 100 (`to` a clientId), 200 (`to` a
 * group) or 300; waits for the reply row and returns its text. */
export async function send(page, mode, to, text) {
  await page.check(`input[name="mode"][value="${mode}"]`);
  if (mode !== 300) await page.fill('#target', to);
  await page.fill('#content', text);
  await page.click('#send');
  const reply = page.locator('#frames tr[data-mode="2"]', { hasText: text }).first();
  await reply.waitFor();
  return reply.innerText();
}

/** Waits until the frames table has a `mode` row containing `text` (each
 * of them, when an array). */
export async function frame(page, mode, text) {
  let row = page.locator(`#frames tr[data-mode="${mode}"]`);
  for (const t of [text].flat()) row = row.filter({ hasText: t });
  row = row.first();
  await row.waitFor();
  return row.innerText();
}

/** The connection timeline, oldest first: [{state, text}]. */
export async function timeline(page) {
  const items = await page.locator('#timeline li').evaluateAll((lis) =>
    lis.map((li) => ({ state: li.dataset.state, text: li.textContent })),
  );
  return items.reverse();
}

export async function shot(page, name) {
  await page.screenshot({ path: join(env('SB_SHOTS'), `${name}.png`), fullPage: true });
}

/** No page error and no Content-Security-Policy violation on `pages`. */
export function noProblems(...pages) {
  for (const p of pages) assert.deepEqual(p.problems, [], `problems on ${p.url()}`);
}
