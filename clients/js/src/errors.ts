// The one error type a send rejects with.

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
 * `ReplyCode`) or a {@link LocalCode}. */
export class SwitchboardError extends Error {
  /** The gateway's reply code, or why the SDK gave up on the send. */
  readonly code: number | LocalCode;
  /** The send's `msgId`. */
  readonly msgId: string | null;

  constructor(code: number | LocalCode, message: string, msgId: string | null = null) {
    super(message);
    this.name = 'SwitchboardError';
    this.code = code;
    this.msgId = msgId;
  }
}
