// Group chat: VUs join ROOMS rooms; each sends a message every
// INTERVAL_MS; members measure delivery latency.
import { WebSocket } from 'k6/experimental/websockets';
import { setInterval, clearInterval, setTimeout } from 'k6/timers';
import { check } from 'k6';
import { Trend, Counter } from 'k6/metrics';
import { VUS, DURATION, RUN, wsUrl } from './lib.js';

const latency = new Trend('sb_group_latency', true);
const deliveries = new Counter('sb_group_deliveries');
const ROOMS = parseInt(__ENV.ROOMS || '2', 10);
const INTERVAL_MS = parseInt(__ENV.INTERVAL_MS || '1000', 10);
const SESSION_MS = parseInt(__ENV.SESSION_MS || '10000', 10);

export const options = {
  scenarios: { chat: { executor: 'constant-vus', vus: VUS, duration: DURATION } },
  thresholds: {
    checks: ['rate>0.99'],
    sb_group_latency: ['p(99)<500'],
  },
};

export default function () {
  const room = `${RUN}-room${__VU % ROOMS}`;
  const ws = new WebSocket(wsUrl(`${RUN}-m${__VU}-${__ITER}`, room));
  let timer;
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.mode === 0) {
      timer = setInterval(() => {
        ws.send(JSON.stringify({ mode: 200, msgId: `${Date.now()}`, group: room, content: { t: Date.now() } }));
      }, INTERVAL_MS);
      setTimeout(() => { clearInterval(timer); ws.close(); }, SESSION_MS);
    } else if (m.mode === 200) {
      deliveries.add(1);
      latency.add(Date.now() - m.content.t);
      check(m, { 'delivery names its group': (x) => x.group === room });
    } else if (m.mode === 2) {
      check(m, { 'group send accepted': (x) => x.code === 0 });
    }
  };
}
