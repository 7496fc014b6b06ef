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
     * 401 refusal, and (where refusals cannot be seen, in browsers) after an
     * attempt that failed before the upgrade. Wins over `token`. */
    getToken?: () => Promise<string>;
    /** Reconnect with `recover`/`epoch` to get what was sent meanwhile
     * (SPEC §7). Default true. */
    recover?: boolean;
    /** A heartbeat goes out every `heartbeatSec` of the welcome; when nothing
     * at all arrives within this long after one, the connection is taken as
     * dead and replaced. Default 10000. */
    heartbeatTimeoutMs?: number;
    /** An attempt that has no welcome this long after it started is given up
     * (and retried). Default 10000. */
    connectTimeoutMs?: number;
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
 * position in the bizCode's log (history on). */
export type Message = DeliveryFrame;
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
}
/** What a successful send resolves to (the mode-2 reply's data). */
export interface SendResult {
    msgId: string;
    /** Connections the message was addressed to. */
    recipients: number;
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
    /** Failed attempts since the last welcome (the backoff exponent). */
    private failures;
    private token;
    private needToken;
    private readonly sends;
    private readonly queue;
    private nextId;
    private readonly idPrefix;
    private retryTimer;
    private connectTimer;
    private heartbeatTimer;
    private deadTimer;
    private lastFrameAt;
    /** When attempts were given up before their welcome (connect timeout),
     * within the last STALE_ATTEMPT_WINDOW_MS. */
    private abandoned;
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
     * the client ends closed before one.
     */
    connect(): Promise<WelcomeData>;
    /** Closes with 1000 and stops reconnecting. Sends waiting for a reply or in
     * the queue reject with `closed`. */
    close(): void;
    /**
     * Sends `content` to `target`; resolves with the reply's `recipients`, or
     * rejects with a {@link SwitchboardError} whose `code` is the reply's
     * (1004 target offline, 1005 rate limited, …) or a local one.
     */
    send(target: Target, content: Json, options?: {
        msgId?: string;
    }): Promise<SendResult>;
    private setState;
    private startAttempt;
    private url;
    private onFrame;
    private onWelcome;
    private onClose;
    private onRefused;
    /** The connection (or attempt) ended: reconnect or stop, by its class. */
    private connectionLost;
    private retry;
    /** Ends for good: state `closed`, every send rejected. */
    private finish;
    private settleWaiters;
    private startHeartbeats;
    private stopConnectionTimers;
    private newMsgId;
    private write;
    private forget;
    private failSend;
}
