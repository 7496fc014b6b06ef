// Reply codes, close codes and what each close means for a client
// (SPEC §2 "Errors and limits"; the Rust twin is crates/protocol/src/codes.rs).

/** The `code` of a mode-2 reply. */
export const ReplyCode = {
  Ok: 0,
  InvalidFrame: 1001,
  UnknownMode: 1002,
  TooLarge: 1003,
  Offline: 1004,
  RateLimited: 1005,
  Forbidden: 1006,
  UnknownBiz: 1007,
  Internal: 1500,
} as const;

/** WebSocket close codes the gateway sends, and 1006 (no close frame: the
 * connection broke, or a handshake was refused) as every WebSocket API
 * reports it. */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  Abnormal: 1006,
  InvalidPayload: 1007,
  Policy: 1008,
  TooBig: 1009,
  Draining: 1012,
  TryAgainLater: 1013,
  ClosedByApi: 4000,
  TokenExpired: 4001,
  SlowConsumer: 4008,
  Replaced: 4009,
} as const;

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
export function closeClass(code: number): CloseClass {
  switch (code) {
    case 4001:
      return 'token';
    case 1000:
    case 1002:
    case 1003:
    case 1007:
    case 1008:
    case 1009:
    case 1010:
    case 4000:
    case 4009:
      return 'terminal';
    default:
      return 'reconnect';
  }
}

/**
 * The class of a handshake refused with an HTTP status (SPEC §2
 * "Connecting"), when the WebSocket implementation shows it (the `ws`
 * package does; browsers report every refusal as close 1006):
 * - 401 (bad or missing token): `token` (a fresh one from `getToken`);
 * - 400, 403, 404, 426: `terminal` (a bad request stays bad);
 * - 429 (with `Retry-After`), 503 (draining, bus down), 502/504 (a load
 *   balancer without a live edge) and anything else: `reconnect`.
 */
export function refusalClass(status: number): CloseClass {
  switch (status) {
    case 401:
      return 'token';
    case 400:
    case 403:
    case 404:
    case 426:
      return 'terminal';
    default:
      return 'reconnect';
  }
}
