/**
 * Request ids (`X-Request-Id`): a client's own id is kept when it is 1-128 visible ASCII
 * characters; otherwise the gateway makes one from a random per-shard prefix and a counter in
 * base 36, several times cheaper than `crypto.randomUUID()` (bench/tools/middleware-bench.ts).
 */
import { randomBytes } from 'node:crypto';

/** The longest client request id the gateway keeps. @example isValidRequestId('x'.repeat(MAX_REQUEST_ID)); // true */
export const MAX_REQUEST_ID = 128;

/**
 * True when `value` can be kept as a request id: 1-128 characters, each `!` to `~` (no space,
 * no control character, nothing that would need escaping in a header or a log line).
 *
 * @example
 * isValidRequestId('req-42');  // true
 * isValidRequestId('a b');     // false
 */
export function isValidRequestId(value: string): boolean {
  const n = value.length;
  if (n === 0 || n > MAX_REQUEST_ID) return false;
  for (let i = 0; i < n; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

/**
 * Makes request ids unique across shards and restarts: 16 random base-36 characters chosen at
 * construction (about 82 bits), a dash, then a counter. One generator per shard.
 *
 * @example
 * const ids = new RequestIdGenerator();
 * ids.next(); // 'k3v9q0x2m1c8a7zt-1'
 */
export class RequestIdGenerator {
  readonly prefix: string;
  private counter = 0;

  constructor(prefix?: string) {
    if (prefix === undefined) {
      const bytes = randomBytes(16);
      let p = '';
      for (let i = 0; i < 16; i++) p += (bytes[i] % 36).toString(36);
      prefix = p;
    }
    this.prefix = `${prefix}-`;
  }

  /** A new id; the counter stays exact up to 2^53 ids per generator. */
  next(): string {
    return this.prefix + (++this.counter).toString(36);
  }
}

/**
 * The id of a request: the first `x-request-id` field of `headers` (the codec's flat list) when
 * it is valid, else a new one from `ids`.
 *
 * @example
 * requestIdOf(['host', 'a', 'x-request-id', 'abc'], ids); // 'abc'
 * requestIdOf(['host', 'a'], ids);                        // ids.next()
 */
export function requestIdOf(headers: readonly string[], ids: RequestIdGenerator): string {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i] === 'x-request-id') {
      const v = headers[i + 1];
      return isValidRequestId(v) ? v : ids.next();
    }
  }
  return ids.next();
}
