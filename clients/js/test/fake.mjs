// A fake WebSocket for the unit tests: each socket the client makes is
// recorded, and the test plays the gateway on it (open, frames, closes,
// refusals) with no server at all.
import { EventEmitter } from 'node:events';

/**
 * A WebSocket constructor and the sockets made with it.
 * - `refusals: true` makes it look like the `ws` package (refused handshakes
 *   come with their status); otherwise it is a browser's (status hidden).
 * - `throws`: the constructor throws what this returns.
 */
export function fakeWebSocket({ refusals = false, throws = undefined } = {}) {
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      if (throws !== undefined) throw throws();
      this.url = new URL(url);
      this.sent = [];
      this.closedWith = undefined;
      this.onopen = null;
      this.onmessage = null;
      this.onclose = null;
      this.onerror = null;
      this.events = new EventEmitter();
      if (refusals) this.on = (event, listener) => this.events.on(event, listener);
      sockets.push(this);
    }

    send(text) {
      if (this.closedWith !== undefined) throw new Error('not open');
      this.sent.push(JSON.parse(text));
    }

    close(code, reason) {
      this.closedWith ??= { code, reason };
    }

    terminate() {
      this.closedWith ??= { code: 'terminated' };
    }

    // ---- the gateway's side ----

    /** The upgrade succeeded and the welcome (with `data` over defaults). */
    welcome(data = {}) {
      this.onopen?.({});
      this.frame({
        mode: 0,
        code: 0,
        msg: 'success',
        data: { clientId: 'c1', bizCode: 'b1', groups: [], node: 'edge-1', heartbeatSec: 30, ...data },
      });
    }

    frame(value) {
      this.onmessage?.({ data: JSON.stringify(value) });
    }

    /** A close frame (or, with 1006 and no open, a failed handshake). */
    serverClose(code, reason = '') {
      this.onclose?.({ code, reason });
    }

    /** A handshake refused with `status` (seen only with `refusals: true`). */
    refuse(status, msg = `refused with ${status}`) {
      const res = new EventEmitter();
      res.statusCode = status;
      res.statusMessage = '';
      res.headers = {};
      this.events.emit('unexpected-response', { destroy() {}, socket: null }, res);
      res.emit('data', Buffer.from(JSON.stringify({ code: status, msg })));
      res.emit('end');
    }

    /** The heartbeats (mode 1) the client sent. */
    heartbeats() {
      return this.sent.filter((f) => f.mode === 1);
    }
  }
  return { WebSocket: FakeSocket, sockets };
}

/** Runs `body` with Math.random returning `value`, then restores it. */
export async function withRandom(value, body) {
  const real = Math.random;
  Math.random = () => value;
  try {
    return await body();
  } finally {
    Math.random = real;
  }
}
