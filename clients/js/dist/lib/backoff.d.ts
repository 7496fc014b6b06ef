/** How long to wait before reconnect attempt `failures` (0 for the first
 * retry after a connection ended): uniform in
 * [0, min(capMs, baseMs · 2^failures)] ("full jitter"), so clients dropped
 * together spread their retries over the whole window instead of coming back
 * in a herd. `random` is `Math.random` unless a test passes its own. */
export declare function backoffDelay(failures: number, baseMs: number, capMs: number, random?: () => number): number;
/** The `Retry-After` header of a 429 in ms: delta-seconds or an HTTP date;
 * undefined when absent or unreadable. */
export declare function retryAfterMs(header: string | undefined, now?: number): number | undefined;
