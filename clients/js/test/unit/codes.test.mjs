// Close-code classes (SPEC §2), handshake refusals and the backoff.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, closeClass, refusalClass, retryAfterMs } from '../../dist/switchboard.js';

test('close codes fall in the classes SPEC §2 gives', () => {
  for (const code of [1001, 1012, 1013, 4008]) assert.equal(closeClass(code), 'reconnect', String(code));
  assert.equal(closeClass(4001), 'token');
  for (const code of [1000, 1002, 1007, 1008, 1009, 4000, 4009]) assert.equal(closeClass(code), 'terminal', String(code));
  // Not sent by the gateway: a broken connection and server faults retry.
  for (const code of [1005, 1006, 1011, 1014, 4999]) assert.equal(closeClass(code), 'reconnect', String(code));
});

test('handshake refusals: 401 token, 400/403/426 terminal, 429/503/502 retry', () => {
  assert.equal(refusalClass(401), 'token');
  for (const s of [400, 403, 404, 426]) assert.equal(refusalClass(s), 'terminal', String(s));
  for (const s of [429, 500, 502, 503, 504]) assert.equal(refusalClass(s), 'reconnect', String(s));
});

test('full jitter: uniform in [0, min(cap, base * 2^k)]', () => {
  assert.equal(backoffDelay(0, 1000, 30000, () => 0), 0);
  assert.equal(backoffDelay(0, 1000, 30000, () => 0.999999), 999);
  assert.equal(backoffDelay(3, 1000, 30000, () => 0.5), 4000);
  assert.equal(backoffDelay(10, 1000, 30000, () => 0.5), 15000, 'capped');
  assert.equal(backoffDelay(5000, 1000, 30000, () => 0.5), 15000, 'no overflow');
  const delays = Array.from({ length: 2000 }, () => backoffDelay(0, 1000, 30000));
  assert.ok(Math.min(...delays) < 100 && Math.max(...delays) > 900, 'spread over the whole window');
});

test('Retry-After: seconds or an HTTP date', () => {
  assert.equal(retryAfterMs('5'), 5000);
  assert.equal(retryAfterMs(undefined), undefined);
  assert.equal(retryAfterMs('soon'), undefined);
  const now = Date.parse('Wed, 21 Oct 2015 07:28:00 GMT');
  assert.equal(retryAfterMs('Wed, 21 Oct 2015 07:28:10 GMT', now), 10000);
});
