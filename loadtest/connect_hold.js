// Connect and hold: every VU opens a connection, waits for the welcome,
// sends a heartbeat every HEARTBEAT_MS and holds it for HOLD_MS.
import { WebSocket } from 'k6/experimental/websockets';
import { setInterval, clearInterval, setTimeout } from 'k6/timers';
import { check } from 'k6';
import { Trend, Rate } from 'k6/metrics';
import { VUS, DURATION, RUN, wsUrl } from './lib.js';

const welcomeMs = new Trend('sb_connect_to_welcome', true);
const heartbeatOk = new Rate('sb_heartbeat_answered');
const HOLD_MS = parseInt(__ENV.HOLD_MS || '10000', 10);
const HEARTBEAT_MS = parseInt(__ENV.HEARTBEAT_MS || '2000', 10);

export const options = {
  scenarios: { hold: { executor: 'constant-vus', vus: VUS, duration: DURATION } },
  thresholds: {
    checks: ['rate>0.99'],
    sb_connect_to_welcome: ['p(99)<1000'],
    sb_heartbeat_answered: ['rate>0.99'],
  },
};

export default function () {
  const started = Date.now();
  const ws = new WebSocket(wsUrl(`${RUN}-h${__VU}-${__ITER}`));
  let welcomed = false;
  let pending = {};
  let timer;
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.mode === 0) {
      welcomed = true;
      welcomeMs.add(Date.now() - started);
      check(m, { 'welcome has a clientId': (x) => !!x.data.clientId });
      timer = setInterval(() => {
        const id = `${Date.now()}-${Math.random()}`;
        pending[id] = true;
        ws.send(JSON.stringify({ mode: 1, msgId: id }));
      }, HEARTBEAT_MS);
    } else if (m.mode === 1) {
      heartbeatOk.add(pending[m.msgId] === true);
      delete pending[m.msgId];
    }
  };
  ws.onopen = () => {
    setTimeout(() => {
      clearInterval(timer);
      check(welcomed, { 'welcome received': (w) => w });
      for (const id in pending) heartbeatOk.add(false);
      ws.close();
    }, HOLD_MS);
  };
  ws.onerror = (e) => check(null, { 'no socket error': () => false });
}
