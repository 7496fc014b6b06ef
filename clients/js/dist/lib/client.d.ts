import { Emitter } from './emitter.js';
import { type DeliveryFrame, type Json, type WelcomeData } from './frames.js';
import { type WebSocketConstructor } from './transport.js';
/** Where a send goes: one client (mode 100), a group (200) or every client
 * of the bizCode (300). */
export type Target = {
    clientId: string;
} | {
    group: string;
} | {
    broadcast: true;
};
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
export type Message = Omit<DeliveryFrame, 'ack'> & {
    ack?: () => void;
};
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
export declare class Switchboard extends Emitter<SwitchboardEvents> {
    private readonly opts;
    private currentState;
    private attempt;
    /** The assigned or chosen clientId (kept across reconnects). */
    private id;
    private welcomeData;
    /** Last processed log position, for `recover=` (SPEC §7). */
    private position;
    /** Whether a welcome was ever received (later ones are reconnects). */
    private welcomedOnce;
    /** Failed attempts and connections since the last stable connection (or
     * `connect()`): the backoff exponent. */
    private failures;
    /** Attempts since the last welcome (the `connecting` event's `attempt`). */
    private attemptsSinceWelcome;
    /** When the current connection's welcome came (monotonic ms). */
    private connectedAt;
    private token;
    private needToken;
    private readonly sends;
    /** Sends with `ack: true` waiting for their receipt, by msgId. */
    private readonly receipts;
    private readonly queue;
    private nextId;
    private readonly idPrefix;
    private retryTimer;
    private connectTimer;
    private heartbeatTimer;
    private deadTimer;
    /** When the oldest heartbeat not followed by any frame went out
     * (monotonic ms); undefined when every heartbeat was. */
    private unansweredSince;
    /** A number per attempt: async steps of an older one stop. */
    private generation;
    private waiters;
    constructor(options: SwitchboardOptions);
    /** The connection's state. */
    get state(): State;
    /** The clientId: the chosen one, or the gateway's after the first welcome. */
    get clientId(): string | undefined;
    /** The current (or last) welcome's data: node, groups, heartbeatSec, … */
    get welcome(): WelcomeData | undefined;
    /** The last processed log position (`epoch`, `seq`), if history is on. */
    get logPosition(): {
        epoch: string;
        seq: number;
    } | undefined;
    /**
     * Connects (and from then on stays connected until {@link close} or a
     * terminal close). Resolves with the first welcome's data; rejects when
     * the client ends closed before one, with a {@link SwitchboardError} whose
     * `code` is the close code (1006 for a refused handshake, a bad `url`, …)
     * and `status` the refusal's HTTP status where the platform shows it.
     */
    connect(): Promise<WelcomeData>;
    /** Closes with 1000 and stops reconnecting. Sends waiting for a reply or in
     * the queue reject with `closed`. */
    close(): void;
    /**
     * Sends `content` to `target`; resolves with the reply's `recipients`, or
     * rejects with a {@link SwitchboardError} whose `code` is the reply's
     * (1004 target offline, 1005 rate limited, …) or a local one. With
     * `ack: true` (a unicast only) the recipient is asked to acknowledge it,
     * and the result's `receipt` settles with the receipt (also emitted as a
     * `receipt` event).
     */
    send(target: Target, content: Json, options?: {
        msgId?: string;
        ack?: boolean;
    }): Promise<SendResult>;
    /**
     * Sends `content` to the backend (mode 500): an `upstream` connection
     * event of this client. Resolves with `{msgId}` once the gateway stored
     * it; rejects like {@link send} (1005 rate limited, 1006 upstream
     * messages off, 1500 not stored, …).
     */
    upstream(content: Json, options?: {
        msgId?: string;
    }): Promise<{
        msgId: string;
    }>;
    /** Writes `frame` (or queues it while reconnecting) and waits for its
     * mode-2 reply; with `ack`, the result also carries the receipt. */
    private request;
    private setState;
    /** Starts an attempt; whatever goes wrong in it ends it, never as an
     * unhandled rejection. */
    private launchAttempt;
    private startAttempt;
    private url;
    private onFrame;
    private onWelcome;
    private onClose;
    private onRefused;
    /** The connection (or attempt) ended: reconnect or stop, by its class.
     * `hiddenRefusal`: it failed before the upgrade where a refusal's status
     * cannot be seen. */
    private connectionLost;
    /** Schedules the next attempt. `stable`: the connection that ended was
     * (a 4001 then reconnects at once). */
    private retry;
    /** Ends for good: state `closed`, every send rejected. */
    private finish;
    private settleWaiters;
    /** Every `heartbeatSec` a heartbeat; the connection is dead when no frame
     * at all came within `heartbeatTimeoutMs` of the oldest heartbeat sent
     * since the last frame: found at most interval + timeout after it died,
     * whatever the two are. Checked at each heartbeat and by a timer. */
    private startHeartbeats;
    /** A timer for the dead check, due when the oldest unanswered heartbeat
     * times out (re-armed if a later one is then the oldest). */
    private armDeadTimer;
    /** Ends the connection if it is dead (see startHeartbeats); whether it did. */
    private checkDead;
    private stopConnectionTimers;
    private newMsgId;
    /** A receipt promise for `msgId`, settled by its mode-4 frame, the
     * receipt timeout, or the end of the client or connection. */
    private expectReceipt;
    private settleReceipt;
    /** Writes a frame that expects no reply (an ack) on the current
     * connection, if there is one. */
    private sendFrame;
    private write;
    private forget;
    private failSend;
}
