// Reconnect delays: exponential backoff with full jitter, capped.

/** How long to wait before reconnect attempt `failures` (0 for the first
 * retry after a connection ended): uniform in
 * [0, min(capMs, baseMs · 2^failures)] ("full jitter"), so clients dropped
 * together spread their retries over the whole window instead of coming back
 * in a herd. `random` is `Math.random` unless a test passes its own. */
export function backoffDelay(
  failures: number,
  baseMs: number,
  capMs: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(Math.max(failures, 0), 30));
  return Math.floor(random() * ceiling);
}

/** The `Retry-After` header of a 429 in ms: delta-seconds or an HTTP date;
 * undefined when absent or unreadable. */
export function retryAfterMs(header: string | undefined, now: number = Date.now()): number | undefined {
  if (header === undefined) return undefined;
  const text = header.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
