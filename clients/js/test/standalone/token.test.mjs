// Tokens against a real standalone in JWT mode (HS256, leeway 0): 4001 at
// expiry → a fresh token from getToken → reconnected and recovered; a 401
// refusal → a fresh token; 4001 without getToken is terminal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { api, assertExactlyOnce, client, env, jwt, sleep, uniqueBiz, waitFor, withContent } from '../support.mjs';

const url = env('SB_JWT_WS_URL');
const http = env('SB_JWT_API');
const secret = env('SB_JWT_SECRET');
const now = () => Math.floor(Date.now() / 1000);

test('4001: a fresh token from getToken, reconnected, and what was sent meanwhile recovered', async () => {
  const biz = uniqueBiz();
  let calls = 0;
  const away = { code: 0, msg: 'sent while away', data: { n: 1 } };
  const getToken = async () => {
    calls += 1;
    if (calls === 2) {
      // Between the 4001 and the reconnect: stored for the client (SPEC §7).
      const res = await api(http, biz, 'send_to_client', { clientId: 'u1', sendUserId: 'bank', ...away });
      assert.equal(res.status, 200, JSON.stringify(res.body));
    }
    return jwt({ sub: 'u1', biz, exp: now() + (calls === 1 ? 3 : 3600) }, secret);
  };
  // The first connection lives 2-3 s, longer than stableAfterMs: its 4001
  // reconnects at once.
  const u = client({ url, bizCode: biz, clientId: 'u1', getToken, stableAfterMs: 1000 });
  const w = await u.sb.connect();
  assert.equal(w.clientId, 'u1');
  const before = { code: 0, msg: 'before', data: null };
  assert.equal((await api(http, biz, 'send_to_client', { clientId: 'u1', sendUserId: 'bank', ...before })).status, 200);

  const expired = await waitFor(() => u.log.states.find((s) => s.state === 'reconnecting'), 'the 4001', 8000, u.log);
  assert.equal(expired.code, 4001);
  assert.equal(expired.delayMs, 0, 'a fresh token, then at once');
  await waitFor(() => u.log.recovered.length === 1, 'the reconnect');
  assert.equal(u.log.recovered[0].recovered, true);
  assert.equal(calls, 2);
  await waitFor(() => withContent(u.log, away).length > 0, 'the send made while away');
  assertExactlyOnce(u.log, [before, away], 'u1');
  assert.equal(u.sb.state, 'connected');
  const echo = await u.sb.send({ clientId: 'u1' }, 'with the new token');
  assert.equal(echo.recipients, 1);
});

test('401: a refused token is replaced by a fresh one from getToken', async () => {
  const biz = uniqueBiz();
  let calls = 0;
  const getToken = async () => {
    calls += 1;
    return calls === 1 ? 'not-a-jwt' : jwt({ sub: 'u2', biz, exp: now() + 3600 }, secret);
  };
  const u = client({ url, bizCode: biz, clientId: 'u2', getToken, backoffBaseMs: 100 });
  await u.sb.connect();
  const refused = u.log.states.find((s) => s.state === 'reconnecting');
  assert.equal(refused.status, 401);
  assert.equal(calls, 2);
});

test('4001 without getToken is terminal', async () => {
  const biz = uniqueBiz();
  // Not yet expired at the handshake (leeway 0), whatever the clock's phase.
  const token = jwt({ sub: 'u3', biz, exp: now() + 3 }, secret);
  const u = client({ url, bizCode: biz, clientId: 'u3', token, backoffBaseMs: 50 });
  await u.sb.connect();
  const closed = await waitFor(() => u.log.states.find((s) => s.state === 'closed'), 'the 4001', 8000, u.log);
  assert.equal(closed.code, 4001);
  await sleep(500);
  assert.equal(u.log.states.filter((s) => s.state === 'connecting').length, 1);
});
