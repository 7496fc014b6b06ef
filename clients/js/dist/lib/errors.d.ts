/**
 * Why a send failed where the gateway did not answer:
 * - `queue_full`: sent while not connected and the wait queue is full;
 * - `closed`: the client is closed (or was never connected);
 * - `connection_lost`: the connection ended after the frame was written and
 *   before its reply: the send may or may not have been delivered;
 * - `timeout`: no reply within `sendTimeoutMs` of the call.
 */
export type LocalCode = 'queue_full' | 'closed' | 'connection_lost' | 'timeout';
/** A failed send: `code` is the gateway's reply code (1001–1007, 1500; see
 * `ReplyCode`) or a {@link LocalCode}. A failed `connect()`: `code` is the
 * close code that ended the client (see `CloseCode`; 1006 for a refused
 * handshake or a bad url) and `status` the refusal's HTTP status where the
 * platform shows it. */
export declare class SwitchboardError extends Error {
    /** The gateway's reply code, why the SDK gave up on the send, or the
     * close code that ended a `connect()`. */
    readonly code: number | LocalCode;
    /** The send's `msgId` (null for `connect()`). */
    readonly msgId: string | null;
    /** `connect()`: the HTTP status of a refused handshake, where visible. */
    readonly status: number | undefined;
    constructor(code: number | LocalCode, message: string, msgId?: string | null, status?: number);
}
