/** Any JSON value: what `content` may be. */
export type Json = null | boolean | number | string | Json[] | {
    [key: string]: Json;
};
/** The `mode` of every frame kind. */
export declare const Mode: {
    readonly Welcome: 0;
    readonly Heartbeat: 1;
    readonly Reply: 2;
    readonly Ack: 3;
    readonly Receipt: 4;
    readonly Unicast: 100;
    readonly Group: 200;
    readonly Broadcast: 300;
    readonly Presence: 400;
    readonly Upstream: 500;
};
/** Mode 1: heartbeat; the gateway answers with a mode-1 reply. */
export interface HeartbeatFrame {
    mode: 1;
    msgId: string;
}
/** Mode 3: acknowledges the delivery `msgId` that carried `"ack": true`
 * (delivery receipts); the gateway does not answer it. */
export interface AckFrame {
    mode: 3;
    msgId: string;
}
/** Mode 100: to one client of the same bizCode; with `ack: true` the sender
 * later gets a receipt (mode 4). */
export interface UnicastFrame {
    mode: 100;
    msgId: string;
    targetClientId: string;
    content: Json;
    ack?: true;
}
/** Mode 200: to every other member of a group of the same bizCode. */
export interface GroupFrame {
    mode: 200;
    msgId: string;
    group: string;
    content: Json;
}
/** Mode 300: to every other client of the same bizCode. */
export interface BroadcastFrame {
    mode: 300;
    msgId: string;
    content: Json;
}
/** Mode 500: a message for the backend (an `upstream` connection event);
 * the mode-2 reply comes once it is stored. */
export interface UpstreamFrame {
    mode: 500;
    msgId: string;
    content: Json;
}
/** What a client sends. */
export type ClientFrame = HeartbeatFrame | AckFrame | UnicastFrame | GroupFrame | BroadcastFrame | UpstreamFrame;
/** The welcome's `data`. `epoch`/`seq` only with history on (SPEC §7),
 * `recovered` only when the client asked to recover. */
export interface WelcomeData {
    clientId: string;
    bizCode: string;
    groups: string[];
    node: string;
    heartbeatSec: number;
    epoch?: string;
    seq?: number;
    recovered?: boolean;
}
/** Mode 0: always the first frame of a connection. */
export interface WelcomeFrame {
    mode: 0;
    code: number;
    msg: string;
    data: WelcomeData;
}
/** Mode 1 from the gateway: the heartbeat's reply. */
export interface HeartbeatReplyFrame {
    mode: 1;
    msgId: string | null;
    ts: number;
}
/** Mode 2: the reply to a client send (or to a bad frame). */
export interface ReplyFrame {
    mode: 2;
    msgId: string | null;
    code: number;
    msg: string;
    data: {
        recipients: number;
    } | null;
}
/** Modes 100/200/300 from the gateway: a delivery. `group` on 200 only;
 * `ack: true` when the sender wants a receipt (answer with mode 3); `seq`
 * with history on. */
export interface DeliveryFrame {
    mode: 100 | 200 | 300;
    msgId: string | null;
    from: string;
    group?: string;
    content: Json;
    ts: number;
    ack?: boolean;
    seq?: number;
}
/** Mode 4: the receipt of a unicast sent with `ack: true`: whether the
 * recipient acknowledged it in time. */
export interface ReceiptFrame {
    mode: 4;
    msgId: string;
    acked: string[];
    unacked: string[];
}
/** Mode 400: a presence notice; `group` is null for bizCode-wide notices. */
export interface PresenceFrame {
    mode: 400;
    event: 'online' | 'offline';
    clientId: string;
    group: string | null;
}
/** What the gateway sends. */
export type ServerFrame = WelcomeFrame | HeartbeatReplyFrame | ReplyFrame | DeliveryFrame | ReceiptFrame | PresenceFrame;
/** A frame that is not what SPEC §2 describes. */
export declare class FrameError extends Error {
    constructor(message: string);
}
/**
 * Encodes a client frame as the gateway's own encoder writes it (fields in
 * the order mode, msgId, target, content), so the text is byte-for-byte the
 * golden fixture's.
 */
export declare function encodeClientFrame(frame: ClientFrame): string;
/**
 * Decodes a text frame from the gateway. Unknown fields are ignored (SPEC
 * §2); the result holds only the fields of its kind.
 *
 * @throws {FrameError} if the text is not JSON, not an object, of an unknown
 * mode, or misses or mistypes a field.
 */
export declare function decodeServerFrame(text: string): ServerFrame;
/**
 * Decodes a client frame (what {@link encodeClientFrame} writes); for tools
 * and tests that read what a client sent. `msgId` may be a number, kept as
 * its text, as the gateway does.
 *
 * @throws {FrameError} as the gateway would refuse it (its code 1001/1002).
 */
export declare function decodeClientFrame(text: string): ClientFrame;
