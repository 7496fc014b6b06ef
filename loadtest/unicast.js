// Unicast: every VU is a pair; A sends RATE messages/s to B; B measures the
// delivery latency from the timestamp in the content.
import { WebSocket } from 'k6/experimental/websockets';
import { setInterval, clearInterval, setTimeout } from 'k6/timers';
import { check } from 'k6';
import { Trend, Counter } from 'k6/metrics';
import { VUS, DURATION, RUN, wsUrl } from './lib.js';

const latency = new Trend('sb_unicast_latency', true);
const sent = new Counter('sb_unicast_sent');
const received = new Counter('sb_unicast_received');
const RATE = parseInt(__ENV.RATE || '10', 10);
const SESSION_MS = parseInt(__ENV.SESSION_MS || '10000', 10);

export const options = {
  scenarios: { pairs: { executor: 'constant-vus', vus: VUS, duration: DURATION } },
  thresholds: {
    checks: ['rate>0.99'],
    sb_unicast_latency: ['p(50)<50', 'p(99)<250'],
  },
};

export default function () {
  const a = `${RUN}-a${__VU}-${__ITER}`;
  const b = `${RUN}-b${__VU}-${__ITER}`;
  const wsB = new WebSocket(wsUrl(b));
  const wsA = new WebSocket(wsUrl(a));
  let ready = 0;
  let timer;
  const start = () => {
    timer = setInterval(() => {
      wsA.send(JSON.stringify({ mode: 100, msgId: `${Date.now()}`, targetClientId: b, content: { t: Date.now() } }));
      sent.add(1);
    }, 1000 / RATE);
    setTimeout(() => {
      clearInterval(timer);
      setTimeout(() => { wsA.close(); wsB.close(); }, 500);
    }, SESSION_MS);
  };
  wsB.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.mode === 0 && ++ready === 2) start();
    if (m.mode === 100) {
      received.add(1);
      latency.add(Date.now() - m.content.t);
      check(m, { 'from is the sender': (x) => x.from === a });
    }
  };
  wsA.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.mode === 0 && ++ready === 2) start();
    if (m.mode === 2) check(m, { 'send accepted': (x) => x.code === 0 || x.code === 1004 });
  };
}
