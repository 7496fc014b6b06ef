// One WebSocket connection attempt over whichever WebSocket the platform
// has: the global one (browsers, Node >= 22) or the `ws` package (Node 18+,
// loaded only when there is no global, so a browser bundle never needs it).

/** The part of the WebSocket API the client uses; the DOM's WebSocket and
 * the `ws` package's both have it. */
export interface SocketLike {
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  /** `ws` only: drop the TCP connection without a close handshake. */
  terminate?: () => void;
  /** `ws` only: its EventEmitter side (for `unexpected-response`). */
  on?: (event: string, listener: (...args: never[]) => void) => unknown;
}

/** A WebSocket constructor: `globalThis.WebSocket`, `ws`'s, or the app's. */
export type WebSocketConstructor = new (url: string) => SocketLike;

/** A handshake the server refused with an HTTP status. */
export interface Refusal {
  status: number;
  /** `Retry-After` (429), as sent. */
  retryAfter: string | undefined;
  /** The body's `msg` (SPEC §2: `{code, msg}`), or the status line. */
  msg: string;
}

/** What happens to an attempt, in order: `open` (only then `message`s),
 * and one end: `close` or `refused`. */
export interface AttemptHandlers {
  message(text: string): void;
  close(code: number, reason: string, opened: boolean): void;
  refused(refusal: Refusal): void;
}

let cached: Promise<WebSocketConstructor> | undefined;

/**
 * The platform's WebSocket: the global one where present, else the `ws`
 * package (an optional peer dependency for Node < 22).
 *
 * @throws {Error} when neither exists.
 */
export function platformWebSocket(): Promise<WebSocketConstructor> {
  if (cached === undefined) {
    cached = load();
    cached.catch(() => {
      cached = undefined;
    });
  }
  return cached;
}

async function load(): Promise<WebSocketConstructor> {
  const global = (globalThis as { WebSocket?: unknown }).WebSocket;
  if (typeof global === 'function') return global as WebSocketConstructor;
  // A variable, so bundlers leave the import alone: browsers never reach it.
  const name = 'ws';
  try {
    const mod = (await import(name)) as { WebSocket?: unknown; default?: unknown };
    const ctor = mod.WebSocket ?? mod.default;
    if (typeof ctor === 'function') return ctor as WebSocketConstructor;
  } catch {
    // Reported below.
  }
  throw new Error('no WebSocket: this runtime has no global WebSocket; install the `ws` package (npm i ws)');
}

/** How much of a refusal's body is read. */
const MAX_REFUSAL_BODY = 4096;

/** One connection attempt; `handlers` hear of it until {@link Attempt.abandon}. */
export class Attempt {
  private readonly socket: SocketLike;
  private live = true;
  private opened = false;
  /** Whether a refused handshake shows as `refused` with its status (`ws`);
   * elsewhere (browsers, Node's global WebSocket) it is a close 1006 before
   * the upgrade, like a network error. */
  readonly showsRefusals: boolean;

  /** @throws whatever the WebSocket constructor throws (a `SyntaxError` for
   * a url it does not take). */
  constructor(ctor: WebSocketConstructor, url: string, handlers: AttemptHandlers) {
    this.socket = new ctor(url);
    const s = this.socket;
    this.showsRefusals = typeof s.on === 'function';
    s.onopen = () => {
      if (this.live) this.opened = true;
    };
    s.onmessage = (ev) => {
      if (this.live && typeof ev.data === 'string') handlers.message(ev.data);
    };
    s.onclose = (ev) => {
      if (!this.live) return;
      this.live = false;
      handlers.close(ev.code, ev.reason, this.opened);
    };
    // A close always follows an error.
    s.onerror = () => {};
    // `ws` shows a refused handshake's status and headers; with a listener
    // here it leaves the request to us.
    if (typeof s.on === 'function') {
      s.on('unexpected-response', ((req: RequestLike, res: ResponseLike) => {
        // Taken now: once the body is read, Node may hand a keep-alive
        // socket back to its agent, where it would keep the process alive.
        const socket = req.socket;
        readRefusal(res, (refusal) => {
          req.destroy();
          socket?.destroy();
          if (!this.live) return;
          this.live = false;
          handlers.refused(refusal);
        });
      }) as (...args: never[]) => void);
    }
  }

  /** Writes a text frame. */
  send(text: string): void {
    this.socket.send(text);
  }

  /** Ends the attempt: its handlers hear nothing more. With `code`, a close
   * handshake is started; without, the connection is dropped (where the
   * platform allows; a browser always closes with 1000). */
  abandon(code?: number, reason?: string): void {
    this.live = false;
    const s = this.socket;
    try {
      if (code === undefined && typeof s.terminate === 'function') s.terminate();
      else s.close(code ?? 1000, reason);
    } catch {
      // Closing a socket that is still connecting throws in some platforms;
      // it is abandoned all the same.
    }
  }
}

interface RequestLike {
  destroy(): void;
  socket?: { destroy(): void } | null;
}

interface ResponseLike {
  statusCode?: number;
  statusMessage?: string;
  headers: Record<string, string | string[] | undefined>;
  on(event: 'data', listener: (chunk: { toString(): string; length: number }) => void): unknown;
  on(event: 'end' | 'error' | 'close', listener: () => void): unknown;
}

function readRefusal(res: ResponseLike, done: (r: Refusal) => void): void {
  let body = '';
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    const status = res.statusCode ?? 0;
    let msg = `HTTP ${status} ${res.statusMessage ?? ''}`.trim();
    try {
      const parsed: unknown = JSON.parse(body);
      if (typeof parsed === 'object' && parsed !== null && typeof (parsed as { msg?: unknown }).msg === 'string') {
        msg = (parsed as { msg: string }).msg;
      }
    } catch {
      // Not the gateway's JSON (a load balancer's page): the status line.
    }
    const ra = res.headers['retry-after'];
    done({ status, retryAfter: Array.isArray(ra) ? ra[0] : ra, msg });
  };
  res.on('data', (chunk) => {
    if (body.length < MAX_REFUSAL_BODY) body += chunk.toString();
  });
  res.on('end', finish);
  res.on('error', finish);
  res.on('close', finish);
}
