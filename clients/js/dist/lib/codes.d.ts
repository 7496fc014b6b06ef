/** The `code` of a mode-2 reply. */
export declare const ReplyCode: {
    readonly Ok: 0;
    readonly InvalidFrame: 1001;
    readonly UnknownMode: 1002;
    readonly TooLarge: 1003;
    readonly Offline: 1004;
    readonly RateLimited: 1005;
    readonly Forbidden: 1006;
    readonly UnknownBiz: 1007;
    readonly Internal: 1500;
};
/** WebSocket close codes the gateway sends, and 1006 (no close frame: the
 * connection broke, or a handshake was refused) as every WebSocket API
 * reports it. */
export declare const CloseCode: {
    readonly Normal: 1000;
    readonly GoingAway: 1001;
    readonly ProtocolError: 1002;
    readonly Abnormal: 1006;
    readonly InvalidPayload: 1007;
    readonly Policy: 1008;
    readonly TooBig: 1009;
    readonly Draining: 1012;
    readonly TryAgainLater: 1013;
    readonly ClosedByApi: 4000;
    readonly TokenExpired: 4001;
    readonly SlowConsumer: 4008;
    readonly Replaced: 4009;
};
/**
 * What a client does after a close:
 * - `reconnect`: again, after a jittered backoff;
 * - `token`: again, at once, with a fresh token from `getToken`;
 * - `terminal`: not at all (reconnecting as is would end the same way).
 */
export type CloseClass = 'reconnect' | 'token' | 'terminal';
/**
 * The class of a close code, as SPEC §2 says: 1001, 1012, 1013 and 4008
 * reconnect; 4001 reconnects with a fresh token; 1000, 1002, 1007, 1008,
 * 1009, 4000 and 4009 are terminal. Codes the gateway never sends are
 * decided here: 1003 (unsupported data) and 1010 (extension) are terminal;
 * 1006 (no close frame), 1005, 1011, 1014 and any other code are taken as a
 * network or server fault: reconnect.
 */
export declare function closeClass(code: number): CloseClass;
/**
 * The class of a handshake refused with an HTTP status (SPEC §2
 * "Connecting"), when the WebSocket implementation shows it (the `ws`
 * package does; browsers report every refusal as close 1006):
 * - 401 (bad or missing token): `token` (a fresh one from `getToken`);
 * - 400, 403, 404, 426: `terminal` (a bad request stays bad);
 * - 429 (with `Retry-After`), 503 (draining, bus down), 502/504 (a load
 *   balancer without a live edge) and anything else: `reconnect`.
 */
export declare function refusalClass(status: number): CloseClass;
