/** The part of the WebSocket API the client uses; the DOM's WebSocket and
 * the `ws` package's both have it. */
export interface SocketLike {
    onopen: ((ev: unknown) => void) | null;
    onmessage: ((ev: {
        data: unknown;
    }) => void) | null;
    onclose: ((ev: {
        code: number;
        reason: string;
    }) => void) | null;
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
/**
 * The platform's WebSocket: the global one where present, else the `ws`
 * package (an optional peer dependency for Node < 22).
 *
 * @throws {Error} when neither exists.
 */
export declare function platformWebSocket(): Promise<WebSocketConstructor>;
/** One connection attempt; `handlers` hear of it until {@link Attempt.abandon}. */
export declare class Attempt {
    private readonly socket;
    private live;
    private opened;
    /** Whether a refused handshake shows as `refused` with its status (`ws`);
     * elsewhere (browsers, Node's global WebSocket) it is a close 1006 before
     * the upgrade, like a network error. */
    readonly showsRefusals: boolean;
    /** @throws whatever the WebSocket constructor throws (a `SyntaxError` for
     * a url it does not take). */
    constructor(ctor: WebSocketConstructor, url: string, handlers: AttemptHandlers);
    /** Writes a text frame. */
    send(text: string): void;
    /** Ends the attempt: its handlers hear nothing more. With `code`, a close
     * handshake is started; without, the connection is dropped (where the
     * platform allows; a browser always closes with 1000). */
    abandon(code?: number, reason?: string): void;
}
