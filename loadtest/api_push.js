// API push: backends push through the HTTP API to a connected group; the
// members measure delivery latency. Thresholds on API latency and checks.
import http from 'k6/http';
import { WebSocket } from 'k6/experimental/websockets';
import { setTimeout } from 'k6/timers';
import { check } from 'k6';
import { Trend } from 'k6/metrics';
import { API, VUS, DURATION, RUN, wsUrl, apiHeaders } from './lib.js';

const latency = new Trend('sb_api_push_latency', true);
const SESSION_MS = parseInt(__ENV.SESSION_MS || '15000', 10);
const group = `${RUN}-api`;

export const options = {
  scenarios: {
    members: { executor: 'constant-vus', vus: Math.max(1, Math.floor(VUS / 2)), duration: DURATION, exec: 'member' },
    pushers: { executor: 'constant-arrival-rate', rate: parseInt(__ENV.RATE || '20', 10), timeUnit: '1s',
               duration: DURATION, preAllocatedVUs: VUS, exec: 'push', startTime: '2s' },
  },
  thresholds: {
    checks: ['rate>0.99'],
    'http_req_duration{scenario:pushers}': ['p(99)<200'],
    http_req_failed: ['rate<0.01'],
  },
};

export function member() {
  const ws = new WebSocket(wsUrl(`${RUN}-member${__VU}-${__ITER}`, group));
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.mode === 0) setTimeout(() => ws.close(), SESSION_MS);
    if (m.mode === 200) latency.add(Date.now() - m.content.data.t);
  };
}

export function push() {
  const body = JSON.stringify({ groupName: group, sendUserId: 'k6', code: 0, msg: 'push', data: { t: Date.now() } });
  const r = http.post(`${API}/api/websocket/send_to_group`, body, { headers: apiHeaders() });
  check(r, {
    'status 200': (x) => x.status === 200,
    'code 0': (x) => x.json('code') === 0,
  });
}
