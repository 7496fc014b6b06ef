// The client: one logical connection to Switchboard that survives reconnects
// (SPEC §2 close-code classes, §7 recovery), with heartbeats, a dead
// connection timeout, sends that return the gateway's reply, and a bounded
// queue for sends made while reconnecting.

import { backoffDelay, retryAfterMs } from './backoff.js';
import { closeClass, refusalClass, type CloseClass } from './codes.js';
import { Emitter } from './emitter.js';
import { SwitchboardError } from './errors.js';
import {
  decodeServerFrame,
  encodeClientFrame,
  type ClientFrame,
  type DeliveryFrame,
  type Json,
  type WelcomeData,
} from './frames.js';
import { Attempt, platformWebSocket, type Refusal, type WebSocketConstructor } from './transport.js';

/** Where a send goes: one client (mode 100), a group (200) or every client
 * of the bizCode (300). */
export type Target = { clientId: string } | { group: string } | { broadcast: true };

/** Options of {@link Switchboard}; every one but `url` and `bizCode` has a
 * default. */
export interface SwitchboardOptions {
  /** The gateway's WebSocket endpoint, e.g. `wss://push.example.com/ws`. */
  url: string;
  /** The tenant (SPEC §1). */
  bizCode: string;
  /** This client's id; absent: the gateway assigns one at the first connect
   * and the client keeps it for its reconnects. */
  clientId?: string;
  /** Groups joined for each connection (`group=`). */
  groups?: string[];
  /** A fixed token (`token=`). */
  token?: string;
  /** Gets a token: before the first connect, after a 4001 (token expired), a
   * 401 refusal, and (where refusals cannot be seen: browsers, Node's global
   * WebSocket) after an attempt that failed before the upgrade. Wins over
   * `token`. It counts against `connectTimeoutMs`. */
  getToken?: () => Promise<string>;
  /** Reconnect with `recover`/`epoch` to get what was sent meanwhile
   * (SPEC §7). Default true. */
  recover?: boolean;
  /** A heartbeat goes out every `heartbeatSec` of the welcome; when nothing
   * at all arrives within this long after the oldest heartbeat not followed
   * by any frame, the connection is taken as dead and replaced. Default
   * 10000. */
  heartbeatTimeoutMs?: number;
  /** An attempt that has no welcome this long after it started (`getToken`
   * included) is given up (and retried). Default 10000. */
  connectTimeoutMs?: number;
  /** A connection that stays up this long is stable: only then is the
   * backoff reset, and only a stable connection's 4001 reconnects at once
   * (an earlier one backs off), so a gateway that closes every connection
   * soon after its welcome is not hammered. Default 10000. */
  stableAfterMs?: number;
  /** A send not answered this long after the call rejects with `timeout`.
   * Default 15000. */
  sendTimeoutMs?: number;
  /** Sends that may wait while (re)connecting; more reject at once with
   * `queue_full`. Default 100. */
  queueLimit?: number;
  /** Backoff: attempt k after a failure waits uniform
   * [0, min(backoffCapMs, backoffBaseMs · 2^k)]. Default 1000. */
  backoffBaseMs?: number;
  /** Default 30000. */
  backoffCapMs?: number;
  /** Sends whose frame is larger (UTF-8 bytes) reject at once with code
   * 1003, as the gateway would answer: its reply to an oversized frame
   * cannot name the send (it carries no `msgId`). Set it to the gateway's
   * `edge.max_frame_bytes`. Default 65536. */
  maxFrameBytes?: number;
  /** Delivery receipts: acknowledge every delivery that asks for it
   * (`"ack": true`) as soon as the `message` listeners returned. Off: call
   * the message's `ack()` when the app has handled it. Default false. */
  autoAck?: boolean;
  /** A send with `ack: true` whose receipt (mode 4) has not come this long
   * after the call: its `receipt` promise rejects with `timeout` (the
   * gateway's `edge.ack_timeout` is at most 30 s). Default 35000. */
  receiptTimeoutMs?: number;
  /** The WebSocket constructor; default the global one, else `ws`. */
  WebSocket?: WebSocketConstructor;
}

/** The connection's state. `idle` until {@link Switchboard.connect}. */
export type State = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

/** A `state` event. */
export interface StateChange {
  state: State;
  /** `reconnecting`/`closed`: the close code that ended the connection
   * (1006 when there was no close frame: a broken connection, a refused
   * handshake, a dead-connection or connect timeout). */
  code?: number;
  /** `reconnecting`/`closed`: the close reason, or what went wrong. */
  reason?: string;
  /** `reconnecting`/`closed`: the HTTP status of a refused handshake, where
   * the platform shows it (Node with `ws`). */
  status?: number;
  /** `connecting`: the attempt's number since the last welcome (1, 2, …). */
  attempt?: number;
  /** `reconnecting`: how long until the next attempt. */
  delayMs?: number;
  /** `connected`: the welcome's data. */
  welcome?: WelcomeData;
}

/** A delivery (mode 100 unicast, 200 group, 300 broadcast): `from` is the
 * sender's clientId or the API's `sendUserId`, `group` is on 200 only, `ts`
 * is when the gateway took the send (ms since the epoch), `seq` the entry's
 * position in the bizCode's log (history on). `ack` is there only when the
 * sender asked for a delivery receipt: call it once the app has handled the
 * message (it sends `{"mode":3,"msgId":..}`; later calls do nothing). */
export type Message = Omit<DeliveryFrame, 'ack'> & { ack?: () => void };

/** A delivery receipt (mode 4) of a unicast sent with `ack: true`. */
export interface Receipt {
  msgId: string;
  /** The recipient, if it acknowledged the message in time. */
  acked: string[];
  /** The recipient, if it did not (offline, gone, or too slow). */
  unacked: string[];
}

/** A presence notice (mode 400). */
export interface Presence {
  event: 'online' | 'offline';
  clientId: string;
  /** null for bizCode-wide notices. */
  group: string | null;
}

/** After each reconnect's welcome: whether everything sent meanwhile will
 * arrive (`true`) or some may be missing (`false`: reload the app's state
 * from its backend). */
export interface Recovered {
  recovered: boolean;
  epoch?: string;
  seq?: number;
}

/** The events and their payloads. */
export interface SwitchboardEvents {
  message: Message;
  presence: Presence;
  state: StateChange;
  recovered: Recovered;
  receipt: Receipt;
}

/** What a successful send resolves to (the mode-2 reply's data). */
export interface SendResult {
  msgId: string;
  /** Connections the message was addressed to. */
  recipients: number;
  /** Sent with `ack: true`: settles with the receipt (mode 4), or rejects
   * with `timeout` after `receiptTimeoutMs`, `closed` when the client
   * closes, `connection_lost` when the connection ends first (the receipt
   * goes to the sending connection only). */
  receipt?: Promise<Receipt>;
}

interface PendingReceipt {
  resolve(r: Receipt): void;
  reject(e: SwitchboardError): void;
  timer: ReturnType<typeof setTimeout>;
}

interface PendingSend {
  msgId: string;
  text: string;
  resolve(r: SendResult): void;
  reject(e: SwitchboardError): void;
  timer: ReturnType<typeof setTimeout>;
  /** Written on the current connection (else waiting in the queue). */
  written: boolean;
}

/** A monotonic clock in ms (wall-clock jumps do not fake a dead or a stable
 * connection). */
function monotonicNow(): number {
  return typeof performance !== 'undefined' ? performance.now() : Date.now();
}

const DEFAULTS = {
  recover: true,
  heartbeatTimeoutMs: 10_000,
  connectTimeoutMs: 10_000,
  stableAfterMs: 10_000,
  sendTimeoutMs: 15_000,
  queueLimit: 100,
  backoffBaseMs: 1_000,
  backoffCapMs: 30_000,
  maxFrameBytes: 65_536,
  autoAck: false,
  receiptTimeoutMs: 35_000,
};

/**
 * A Switchboard client.
 *
 * ```js
 * const sb = new Switchboard({ url: 'wss://push.example.com/ws', bizCode: 'shop', clientId: 'u42', groups: ['room'] });
 * sb.on('message', (m) => console.log(m.from, m.content));
 * await sb.connect();
 * await sb.send({ group: 'room' }, { text: 'hi' });
 * ```
 */
export class Switchboard extends Emitter<SwitchboardEvents> {
  private readonly opts: SwitchboardOptions & typeof DEFAULTS;
  private currentState: State = 'idle';
  private attempt: Attempt | undefined;
  /** The assigned or chosen clientId (kept across reconnects). */
  private id: string | undefined;
  private welcomeData: WelcomeData | undefined;
  /** Last processed log position, for `recover=` (SPEC §7). */
  private position: { epoch: string; seq: number } | undefined;
  /** Whether a welcome was ever received (later ones are reconnects). */
  private welcomedOnce = false;
  /** Failed attempts and connections since the last stable connection (or
   * `connect()`): the backoff exponent. */
  private failures = 0;
  /** Attempts since the last welcome (the `connecting` event's `attempt`). */
  private attemptsSinceWelcome = 0;
  /** When the current connection's welcome came (monotonic ms). */
  private connectedAt: number | undefined;
  private token: string | undefined;
  private needToken = true;
  private readonly sends = new Map<string, PendingSend>();
  /** Sends with `ack: true` waiting for their receipt, by msgId. */
  private readonly receipts = new Map<string, PendingReceipt>();
  private readonly queue: PendingSend[] = [];
  private nextId = 0;
  private readonly idPrefix = Math.random().toString(36).slice(2, 10);
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  private deadTimer: ReturnType<typeof setTimeout> | undefined;
  /** When the oldest heartbeat not followed by any frame went out
   * (monotonic ms); undefined when every heartbeat was. */
  private unansweredSince: number | undefined;
  /** A number per attempt: async steps of an older one stop. */
  private generation = 0;
  private waiters: { resolve(w: WelcomeData): void; reject(e: SwitchboardError): void }[] = [];

  constructor(options: SwitchboardOptions) {
    super();
    if (typeof options.url !== 'string' || options.url === '') throw new TypeError('url is required');
    if (typeof options.bizCode !== 'string' || options.bizCode === '') throw new TypeError('bizCode is required');
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
    this.opts = { ...DEFAULTS, ...(given as unknown as SwitchboardOptions) };
    this.id = options.clientId;
    this.token = options.token;
  }

  /** The connection's state. */
  get state(): State {
    return this.currentState;
  }

  /** The clientId: the chosen one, or the gateway's after the first welcome. */
  get clientId(): string | undefined {
    return this.id;
  }

  /** The current (or last) welcome's data: node, groups, heartbeatSec, … */
  get welcome(): WelcomeData | undefined {
    return this.welcomeData;
  }

  /** The last processed log position (`epoch`, `seq`), if history is on. */
  get logPosition(): { epoch: string; seq: number } | undefined {
    return this.position === undefined ? undefined : { ...this.position };
  }

  /**
   * Connects (and from then on stays connected until {@link close} or a
   * terminal close). Resolves with the first welcome's data; rejects when
   * the client ends closed before one, with a {@link SwitchboardError} whose
   * `code` is the close code (1006 for a refused handshake, a bad `url`, …)
   * and `status` the refusal's HTTP status where the platform shows it.
   */
  connect(): Promise<WelcomeData> {
    const p = new Promise<WelcomeData>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (this.currentState === 'connected' && this.welcomeData !== undefined) {
      this.settleWaiters(this.welcomeData);
    } else if (this.currentState === 'idle' || this.currentState === 'closed') {
      this.failures = 0;
      this.attemptsSinceWelcome = 0;
      this.launchAttempt();
    }
    return p;
  }

  /** Closes with 1000 and stops reconnecting. Sends waiting for a reply or in
   * the queue reject with `closed`. */
  close(): void {
    if (this.currentState === 'closed' || this.currentState === 'idle') return;
    this.attempt?.abandon(1000, 'closed by the client');
    this.finish(1000, 'closed by the client', undefined);
  }

  /**
   * Sends `content` to `target`; resolves with the reply's `recipients`, or
   * rejects with a {@link SwitchboardError} whose `code` is the reply's
   * (1004 target offline, 1005 rate limited, …) or a local one. With
   * `ack: true` (a unicast only) the recipient is asked to acknowledge it,
   * and the result's `receipt` settles with the receipt (also emitted as a
   * `receipt` event).
   */
  send(target: Target, content: Json, options: { msgId?: string; ack?: boolean } = {}): Promise<SendResult> {
    const msgId = options.msgId ?? this.newMsgId();
    if (content === undefined) return Promise.reject(new TypeError('content is required'));
    const ack = options.ack === true;
    if (ack && !('clientId' in target)) return Promise.reject(new TypeError('ack is for sends to one client only'));
    if (ack && this.receipts.has(msgId)) {
      return Promise.reject(new TypeError(`msgId ${msgId} is already waiting for its receipt`));
    }
    let frame: ClientFrame;
    if ('clientId' in target) {
      frame = { mode: 100, msgId, targetClientId: target.clientId, content };
      if (ack) frame.ack = true;
    } else if ('group' in target) frame = { mode: 200, msgId, group: target.group, content };
    else frame = { mode: 300, msgId, content };
    return this.request(frame, ack);
  }

  /**
   * Sends `content` to the backend (mode 500): an `upstream` connection
   * event of this client. Resolves with `{msgId}` once the gateway stored
   * it; rejects like {@link send} (1005 rate limited, 1006 upstream
   * messages off, 1500 not stored, …).
   */
  upstream(content: Json, options: { msgId?: string } = {}): Promise<{ msgId: string }> {
    const msgId = options.msgId ?? this.newMsgId();
    if (content === undefined) return Promise.reject(new TypeError('content is required'));
    return this.request({ mode: 500, msgId, content }).then((r) => ({ msgId: r.msgId }));
  }

  /** Writes `frame` (or queues it while reconnecting) and waits for its
   * mode-2 reply; with `ack`, the result also carries the receipt. */
  private request(frame: Exclude<ClientFrame, { mode: 1 | 3 }>, ack = false): Promise<SendResult> {
    const msgId = frame.msgId;
    const text = encodeClientFrame(frame);
    const bytes = new TextEncoder().encode(text).length;
    if (bytes > this.opts.maxFrameBytes) {
      return Promise.reject(
        new SwitchboardError(1003, `frame of ${bytes} bytes over the size limit (${this.opts.maxFrameBytes})`, msgId),
      );
    }
    return new Promise<SendResult>((resolve, reject) => {
      const state = this.currentState;
      if (state === 'idle' || state === 'closed') {
        reject(new SwitchboardError('closed', 'the client is not connected', msgId));
        return;
      }
      if (this.sends.has(msgId)) {
        reject(new TypeError(`msgId ${msgId} is already waiting for its reply`));
        return;
      }
      if (state !== 'connected' && this.queue.length >= this.opts.queueLimit) {
        reject(new SwitchboardError('queue_full', `${this.queue.length} sends already wait for a connection`, msgId));
        return;
      }
      // Registered before the frame goes out: a receipt may come before
      // the reply.
      const receipt = ack ? this.expectReceipt(msgId) : undefined;
      const pending: PendingSend = {
        msgId,
        text,
        resolve: (r) => resolve(receipt === undefined ? r : { ...r, receipt }),
        reject: (e) => {
          if (receipt !== undefined) this.settleReceipt(msgId, e);
          reject(e);
        },
        written: false,
        timer: setTimeout(() => this.failSend(pending, 'timeout', 'no reply in time'), this.opts.sendTimeoutMs),
      };
      this.sends.set(msgId, pending);
      if (state === 'connected') this.write(pending);
      else this.queue.push(pending);
    });
  }

  // ---- connection lifecycle ----

  private setState(change: StateChange): void {
    this.currentState = change.state;
    this.emit('state', change);
  }

  /** Starts an attempt; whatever goes wrong in it ends it, never as an
   * unhandled rejection. */
  private launchAttempt(): void {
    this.startAttempt().catch((e: unknown) => {
      // Not expected (every step has its own handling): end for good rather
      // than hang in `connecting`.
      this.finish(1006, `internal error: ${errorText(e)}`, undefined);
    });
  }

  private async startAttempt(): Promise<void> {
    const gen = ++this.generation;
    this.attemptsSinceWelcome += 1;
    this.setState({ state: 'connecting', attempt: this.attemptsSinceWelcome });
    // A bad url can never succeed: terminal.
    const bad = badUrl(this.opts.url);
    if (bad !== undefined) {
      this.finish(1006, bad, undefined);
      return;
    }
    // The whole attempt, getToken included, has connectTimeoutMs.
    this.connectTimer = setTimeout(() => {
      if (gen !== this.generation) return;
      const waitingForToken = this.attempt === undefined && this.opts.getToken !== undefined;
      this.attempt?.abandon();
      this.connectionLost(
        1006,
        waitingForToken ? 'connect timeout: getToken did not answer in time' : 'connect timeout: no welcome in time',
        undefined,
        false,
      );
    }, this.opts.connectTimeoutMs);
    let ctor: WebSocketConstructor;
    try {
      ctor = this.opts.WebSocket ?? (await platformWebSocket());
    } catch (e) {
      if (gen === this.generation) this.finish(1006, errorText(e), undefined);
      return;
    }
    // close() (or the connect timeout) while the module loaded.
    if (gen !== this.generation) return;
    if (this.opts.getToken !== undefined && this.needToken) {
      try {
        const t = await this.opts.getToken();
        if (gen !== this.generation) return;
        this.token = t;
        this.needToken = false;
      } catch (e) {
        if (gen !== this.generation) return;
        clearTimeout(this.connectTimer);
        this.retry('reconnect', 1006, `getToken failed: ${errorText(e)}`, undefined, undefined, false);
        return;
      }
    }
    if (gen !== this.generation) return;
    try {
      this.attempt = new Attempt(ctor, this.url(), {
        message: (text) => this.onFrame(gen, text),
        close: (code, reason, opened) => this.onClose(gen, code, reason, opened),
        refused: (r) => this.onRefused(gen, r),
      });
    } catch (e) {
      // A SyntaxError is the WebSocket refusing the url itself (its scheme,
      // a fragment): it would refuse it again. Anything else counts as a
      // network error.
      if ((e as { name?: unknown } | null)?.name === 'SyntaxError') {
        this.finish(1006, `invalid url: ${errorText(e)}`, undefined);
      } else {
        this.connectionLost(1006, `WebSocket failed: ${errorText(e)}`, undefined, false);
      }
    }
  }

  private url(): string {
    const u = new URL(this.opts.url);
    const q = u.searchParams;
    q.set('bizCode', this.opts.bizCode);
    if (this.id !== undefined) q.set('clientId', this.id);
    if (this.opts.groups !== undefined && this.opts.groups.length > 0) q.set('group', this.opts.groups.join(','));
    if (this.token !== undefined) q.set('token', this.token);
    if (this.opts.recover && this.position !== undefined) {
      q.set('recover', String(this.position.seq));
      q.set('epoch', this.position.epoch);
    }
    return u.toString();
  }

  private onFrame(gen: number, text: string): void {
    if (gen !== this.generation) return;
    // Any frame shows the connection alive: every heartbeat so far answered.
    this.unansweredSince = undefined;
    let frame;
    try {
      frame = decodeServerFrame(text);
    } catch {
      // Not a frame of SPEC §2: ignored, as a newer gateway's frames would be.
      return;
    }
    if (this.welcomeData === undefined || this.currentState !== 'connected') {
      if (frame.mode === 0) this.onWelcome(gen, frame.data);
      return;
    }
    switch (frame.mode) {
      case 2: {
        const pending = frame.msgId === null ? undefined : this.sends.get(frame.msgId);
        if (pending === undefined || !pending.written) return;
        this.forget(pending);
        if (frame.code === 0) pending.resolve({ msgId: pending.msgId, recipients: frame.data?.recipients ?? 0 });
        else pending.reject(new SwitchboardError(frame.code, frame.msg, pending.msgId));
        return;
      }
      case 4: {
        const r: Receipt = { msgId: frame.msgId, acked: frame.acked, unacked: frame.unacked };
        this.settleReceipt(frame.msgId, r);
        this.emit('receipt', r);
        return;
      }
      case 100:
      case 200:
      case 300: {
        const m: Message = { mode: frame.mode, msgId: frame.msgId, from: frame.from, content: frame.content, ts: frame.ts };
        if (frame.group !== undefined) m.group = frame.group;
        if (frame.seq !== undefined) m.seq = frame.seq;
        const ackId = frame.ack === true ? frame.msgId : null;
        if (ackId !== null) {
          let acked = false;
          m.ack = () => {
            if (acked || gen !== this.generation) return;
            acked = true;
            this.sendFrame({ mode: 3, msgId: ackId });
          };
        }
        this.emit('message', m);
        if (this.opts.autoAck) m.ack?.();
        // Processed: a reconnect from here on asks for what comes after it.
        if (frame.seq !== undefined && this.position !== undefined && frame.seq > this.position.seq) {
          this.position.seq = frame.seq;
        }
        return;
      }
      case 400:
        this.emit('presence', { event: frame.event, clientId: frame.clientId, group: frame.group });
        return;
      default:
        return;
    }
  }

  private onWelcome(gen: number, data: WelcomeData): void {
    clearTimeout(this.connectTimer);
    const reconnect = this.welcomedOnce;
    const asked = this.opts.recover && this.position !== undefined;
    this.welcomedOnce = true;
    // The backoff is reset only once this connection proves stable (see
    // connectionLost): a gateway closing right after each welcome backs off.
    this.attemptsSinceWelcome = 0;
    this.connectedAt = monotonicNow();
    this.welcomeData = data;
    this.id = data.clientId;
    const recovered = asked && data.recovered === true;
    // Recovered: the welcome's seq is where we asked from. Otherwise (or
    // history off) start from where the welcome says.
    this.position = data.epoch !== undefined && data.seq !== undefined ? { epoch: data.epoch, seq: data.seq } : undefined;
    this.startHeartbeats(gen, data.heartbeatSec);
    this.setState({ state: 'connected', welcome: data });
    if (reconnect) {
      const r: Recovered = { recovered };
      if (data.epoch !== undefined) r.epoch = data.epoch;
      if (data.seq !== undefined) r.seq = data.seq;
      this.emit('recovered', r);
    }
    if (gen !== this.generation) return;
    for (const pending of this.queue.splice(0)) this.write(pending);
    this.settleWaiters(data);
  }

  private onClose(gen: number, code: number, reason: string, opened: boolean): void {
    if (gen !== this.generation) return;
    // Failed before the upgrade, on a platform that hides refusals (a
    // browser, Node's global WebSocket): it may have been a 401.
    const hidden = !opened && this.attempt?.showsRefusals !== true;
    this.connectionLost(code, reason, undefined, hidden);
  }

  private onRefused(gen: number, r: Refusal): void {
    if (gen !== this.generation) return;
    this.connectionLost(1006, r.msg, r, false);
  }

  /** The connection (or attempt) ended: reconnect or stop, by its class.
   * `hiddenRefusal`: it failed before the upgrade where a refusal's status
   * cannot be seen. */
  private connectionLost(code: number, reason: string, refusal: Refusal | undefined, hiddenRefusal: boolean): void {
    const stable = this.connectedAt !== undefined && monotonicNow() - this.connectedAt >= this.opts.stableAfterMs;
    if (stable) this.failures = 0;
    this.connectedAt = undefined;
    this.stopConnectionTimers();
    this.attempt = undefined;
    for (const pending of [...this.sends.values()]) {
      if (pending.written) this.failSend(pending, 'connection_lost', 'the connection ended before the reply');
    }
    for (const msgId of [...this.receipts.keys()]) {
      // Those still queued (not written) keep waiting: they go out on the
      // next connection, whose receipt they get.
      if (this.sends.get(msgId)?.written === false) continue;
      this.settleReceipt(msgId, new SwitchboardError('connection_lost', 'the connection ended before the receipt', msgId));
    }
    let cls: CloseClass = refusal !== undefined ? refusalClass(refusal.status) : closeClass(code);
    // Where a refusal is invisible it may have been a 401: with getToken,
    // the next attempt takes a fresh token. (Where it is visible, only a 401
    // or a 4001 asks for one: a network error does not.)
    if (hiddenRefusal && this.opts.getToken !== undefined) this.needToken = true;
    if (cls === 'token' && this.opts.getToken === undefined) cls = 'terminal';
    if (cls === 'terminal') {
      this.finish(code, reason, refusal?.status);
      return;
    }
    if (cls === 'token') this.needToken = true;
    this.retry(cls, code, reason, refusal?.status, refusal?.retryAfter, stable);
  }

  /** Schedules the next attempt. `stable`: the connection that ended was
   * (a 4001 then reconnects at once). */
  private retry(
    cls: CloseClass,
    code: number,
    reason: string,
    status: number | undefined,
    retryAfter: string | undefined,
    stable: boolean,
  ): void {
    // A stable connection's 4001 reconnects at once with its fresh token; a
    // 401 refusal, or a 4001 soon after the welcome, backs off.
    const atOnce = cls === 'token' && status === undefined && stable;
    let delay = atOnce ? 0 : backoffDelay(this.failures, this.opts.backoffBaseMs, this.opts.backoffCapMs);
    delay += retryAfterMs(retryAfter) ?? 0;
    if (!atOnce) this.failures += 1;
    const gen = ++this.generation;
    const change: StateChange = { state: 'reconnecting', code, reason, delayMs: delay };
    if (status !== undefined) change.status = status;
    this.setState(change);
    this.retryTimer = setTimeout(() => {
      if (gen === this.generation) this.launchAttempt();
    }, delay);
  }

  /** Ends for good: state `closed`, every send rejected. */
  private finish(code: number, reason: string, status: number | undefined): void {
    this.generation += 1;
    this.stopConnectionTimers();
    clearTimeout(this.retryTimer);
    this.attempt = undefined;
    this.connectedAt = undefined;
    for (const pending of [...this.sends.values()]) this.failSend(pending, 'closed', `the client closed: ${code} ${reason}`);
    for (const msgId of [...this.receipts.keys()]) {
      this.settleReceipt(msgId, new SwitchboardError('closed', `the client closed: ${code} ${reason}`, msgId));
    }
    const change: StateChange = { state: 'closed', code, reason };
    if (status !== undefined) change.status = status;
    this.setState(change);
    const waiters = this.waiters.splice(0);
    for (const w of waiters) {
      w.reject(new SwitchboardError(code, `closed before connecting: ${code} ${reason}`, null, status));
    }
  }

  private settleWaiters(data: WelcomeData): void {
    for (const w of this.waiters.splice(0)) w.resolve(data);
  }

  // ---- heartbeats ----

  /** Every `heartbeatSec` a heartbeat; the connection is dead when no frame
   * at all came within `heartbeatTimeoutMs` of the oldest heartbeat sent
   * since the last frame: found at most interval + timeout after it died,
   * whatever the two are. Checked at each heartbeat and by a timer. */
  private startHeartbeats(gen: number, heartbeatSec: number): void {
    const everyMs = Math.max(1, heartbeatSec) * 1000;
    this.unansweredSince = undefined;
    this.heartbeatTimer = setInterval(() => {
      if (gen !== this.generation || this.attempt === undefined) return;
      if (this.checkDead(gen)) return;
      this.unansweredSince ??= monotonicNow();
      try {
        this.attempt.send(encodeClientFrame({ mode: 1, msgId: this.newMsgId() }));
      } catch {
        // The socket is closing: its close ends the connection.
      }
      this.armDeadTimer(gen);
    }, everyMs);
  }

  /** A timer for the dead check, due when the oldest unanswered heartbeat
   * times out (re-armed if a later one is then the oldest). */
  private armDeadTimer(gen: number): void {
    if (this.deadTimer !== undefined || this.unansweredSince === undefined) return;
    const due = Math.max(0, this.unansweredSince + this.opts.heartbeatTimeoutMs - monotonicNow());
    this.deadTimer = setTimeout(() => {
      this.deadTimer = undefined;
      if (gen !== this.generation) return;
      if (!this.checkDead(gen)) this.armDeadTimer(gen);
    }, Math.ceil(due));
  }

  /** Ends the connection if it is dead (see startHeartbeats); whether it did. */
  private checkDead(gen: number): boolean {
    if (gen !== this.generation || this.unansweredSince === undefined) return false;
    const silentMs = monotonicNow() - this.unansweredSince;
    if (silentMs < this.opts.heartbeatTimeoutMs) return false;
    this.attempt?.abandon();
    this.connectionLost(1006, `heartbeat timeout: no frame for ${Math.round(silentMs)} ms`, undefined, false);
    return true;
  }

  private stopConnectionTimers(): void {
    clearTimeout(this.connectTimer);
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.deadTimer);
    this.deadTimer = undefined;
    this.unansweredSince = undefined;
  }

  // ---- sends ----

  private newMsgId(): string {
    this.nextId += 1;
    return `${this.idPrefix}-${this.nextId}`;
  }

  /** A receipt promise for `msgId`, settled by its mode-4 frame, the
   * receipt timeout, or the end of the client or connection. */
  private expectReceipt(msgId: string): Promise<Receipt> {
    let settle: Pick<PendingReceipt, 'resolve' | 'reject'> | undefined;
    const promise = new Promise<Receipt>((resolve, reject) => {
      settle = { resolve, reject };
    });
    // An app that never looks at the receipt must not see an unhandled
    // rejection; one that awaits it still gets the error.
    promise.catch(() => {});
    const timer = setTimeout(
      () => this.settleReceipt(msgId, new SwitchboardError('timeout', 'no receipt in time', msgId)),
      this.opts.receiptTimeoutMs,
    );
    if (settle !== undefined) this.receipts.set(msgId, { ...settle, timer });
    return promise;
  }

  private settleReceipt(msgId: string, outcome: Receipt | SwitchboardError): void {
    const entry = this.receipts.get(msgId);
    if (entry === undefined) return;
    this.receipts.delete(msgId);
    clearTimeout(entry.timer);
    if (outcome instanceof SwitchboardError) entry.reject(outcome);
    else entry.resolve(outcome);
  }

  /** Writes a frame that expects no reply (an ack) on the current
   * connection, if there is one. */
  private sendFrame(frame: ClientFrame): void {
    if (this.currentState !== 'connected') return;
    try {
      this.attempt?.send(encodeClientFrame(frame));
    } catch {
      // The socket is closing: the ack is lost (the receipt says unacked).
    }
  }

  private write(pending: PendingSend): void {
    pending.written = true;
    try {
      this.attempt?.send(pending.text);
    } catch {
      // The socket is closing; its close fails the send.
    }
  }

  private forget(pending: PendingSend): void {
    clearTimeout(pending.timer);
    this.sends.delete(pending.msgId);
    const i = this.queue.indexOf(pending);
    if (i >= 0) this.queue.splice(i, 1);
  }

  private failSend(pending: PendingSend, code: 'timeout' | 'closed' | 'connection_lost', why: string): void {
    this.forget(pending);
    pending.reject(new SwitchboardError(code, why, pending.msgId));
  }
}

/** Why `url` can never be connected to, or undefined when it may. */
function badUrl(url: string): string | undefined {
  try {
    new URL(url);
    return undefined;
  } catch (e) {
    return `invalid url ${JSON.stringify(url.slice(0, 100))}: ${errorText(e)}`;
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
