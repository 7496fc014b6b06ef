// Broadcast: LISTENERS clients hold connections; one broadcaster sends a
// mode-300 message every INTERVAL_MS; listeners measure delivery latency.
import { WebSocket } from 'k6/experimental/websockets';
import { setInterval, clearInterval, setTimeout } from 'k6/timers';
import { check } from 'k6';
import { Trend, Counter } from 'k6/metrics';
import { VUS, DURATION, RUN, wsUrl } from './lib.js';

const latency = new Trend('sb_broadcast_latency', true);
const deliveries = new Counter('sb_broadcast_deliveries');
const INTERVAL_MS = parseInt(__ENV.INTERVAL_MS || '1000', 10);
const SESSION_MS = parseInt(__ENV.SESSION_MS || '15000', 10);

export const options = {
  scenarios: {
    listeners: { executor: 'constant-vus', vus: VUS, duration: DURATION, exec: 'listen' },
    broadcaster: { executor: 'constant-vus', vus: 1, duration: DURATION, exec: 'broadcast', startTime: '2s' },
  },
  thresholds: {
    checks: ['rate>0.99'],
    sb_broadcast_latency: ['p(99)<500'],
  },
};

export function listen() {
  const ws = new WebSocket(wsUrl(`${RUN}-l${__VU}-${__ITER}`));
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.mode === 0) setTimeout(() => ws.close(), SESSION_MS);
    if (m.mode === 300) {
      deliveries.add(1);
      latency.add(Date.now() - m.content.t);
    }
  };
}

export function broadcast() {
  const ws = new WebSocket(wsUrl(`${RUN}-caster-${__ITER}`));
  let timer;
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.mode === 0) {
      timer = setInterval(() => {
        ws.send(JSON.stringify({ mode: 300, msgId: `${Date.now()}`, content: { t: Date.now() } }));
      }, INTERVAL_MS);
      setTimeout(() => { clearInterval(timer); ws.close(); }, SESSION_MS);
    } else if (m.mode === 2) {
      check(m, { 'broadcast accepted': (x) => x.code === 0 });
    }
  };
}
