/**
 * Cluster mode's rate-limit leases in the state table: the tokens an instance took from a bucket
 * shared through Redis (src/cluster/ratelimit.ts), spent by every shard with a compare-and-swap,
 * without a lock and without waiting for Redis.
 *
 * A lease takes `LEASE_FIELDS` BigInt64 cells of the layout (see ./layout.ts: one per listener,
 * one per route-limit entry), used as Int32 cells (no BigInt on the hot path), named by
 * {@link LEASE}:
 * - `TOKENS`: the tokens left, signed. Zeroed memory is an empty lease. Tokens below zero are
 *   credit: a lease that is neither dry nor already a whole lease in debt admits at once and the
 *   next grant pays it back, so the first request of a bucket (a new key, a quiet listener whose
 *   lease expired) never waits for Redis. Debt never expires.
 * - `EXPIRY`: the clock (ms) at which positive tokens expire. The main thread writes it before it
 *   adds granted tokens, so a take never sees new tokens with an old expiry (it may see old tokens
 *   with the new one: they were granted all the same, only late).
 * - `DRY`: until this clock the shared bucket is known to be empty (Redis granted less than
 *   asked): no credit and no new ask before then.
 * - `WANT`: the clock of the ask in flight (0: none). A shard takes it by CAS, so one ask per
 *   bucket is outstanding however many shards run low at once. An ask older than
 *   {@link WANT_STALE_MS} is taken over (its answer was lost: Redis went away, a shard died).
 *
 * The clock ({@link leaseClock}) is `process.hrtime.bigint()` in ms, the same in every thread of
 * the process, kept in 31 bits and compared by difference (it wraps after 24 days: a lease
 * lasts seconds). 0 is never a clock value, so 0 means "none". The state table passes the value
 * the main thread last stored in it (`StateTable.tickLeaseClock`, every few ms while leases are
 * on): a decision reads one cell instead of calling a clock.
 */

/** Int32 offsets of a lease's cells (from twice its BigInt64 index). */
export const LEASE = { TOKENS: 0, EXPIRY: 1, DRY: 2, WANT: 3 } as const;

/** {@link leaseTake} bits: the request is admitted... */
export const ADMITTED = 1;
/** ...and the caller must send an ask for this bucket to the main thread (it holds `WANT` now). */
export const ASK = 2;

/** An ask unanswered this long is lost: the next take may ask again. */
export const WANT_STALE_MS = 2_000;

/** The lease clock: monotonic ms, process-wide, in 31 bits, never 0. */
export function leaseClock(): number {
  // A float division (exact: ns since boot fit in 53 bits); `&` truncates and wraps it.
  return (Number(process.hrtime.bigint()) / 1e6) & 0x7fffffff || 1;
}

/** `a` is after `b` on the wrapping clock. */
const after = (a: number, b: number): boolean => ((a - b) | 0) > 0;

/** Tokens usable at `now`: positive ones past their expiry count as none. */
function usable(a: Int32Array, i: number, now: number): number {
  const t = Atomics.load(a, i + LEASE.TOKENS);
  return t > 0 && !after(Atomics.load(a, i + LEASE.EXPIRY), now) ? 0 : t;
}

/** The lease's usable tokens now (negative: debt), for the main thread's next ask and for views. */
export function leaseAvailable(a: Int32Array, cell: number, now: number = leaseClock()): number {
  return usable(a, 2 * cell, now);
}

/**
 * Spends one token of the lease at BigInt64 index `cell` (any thread; `a` is the BigInt64 buffer
 * seen as Int32). Returns {@link ADMITTED} or 0, with {@link ASK} set when this call took the
 * bucket's `WANT` and must ask for more: when `lease / 2` tokens or fewer are left after an
 * admit, or on a refusal outside a dry spell.
 *
 * @example
 * const r = leaseTake(i32, listenerLeaseCell(slot), lease);
 * if (r & ASK) askMore(slot);
 * if (!(r & ADMITTED)) refuse();
 */
export function leaseTake(a: Int32Array, cell: number, lease: number, now: number = leaseClock()): number {
  const i = 2 * cell;
  const dryUntil = Atomics.load(a, i + LEASE.DRY);
  const dry = dryUntil !== 0 && after(dryUntil, now);
  const floor = dry ? 0 : -lease;
  for (;;) {
    const raw = Atomics.load(a, i + LEASE.TOKENS);
    const t = raw > 0 && !after(Atomics.load(a, i + LEASE.EXPIRY), now) ? 0 : raw;
    if (t <= floor) return dry ? 0 : want(a, i, now);
    if (Atomics.compareExchange(a, i + LEASE.TOKENS, raw, t - 1) !== raw) continue;
    return t - 1 <= lease >> 1 && !dry ? ADMITTED | want(a, i, now) : ADMITTED;
  }
}

/** Takes the bucket's `WANT` (none in flight, or a lost one): {@link ASK}, else 0. */
function want(a: Int32Array, i: number, now: number): number {
  const w = Atomics.load(a, i + LEASE.WANT);
  if (w !== 0 && ((now - w) | 0) < WANT_STALE_MS) return 0;
  return Atomics.compareExchange(a, i + LEASE.WANT, w, now) === w ? ASK : 0;
}

/**
 * Main thread: Redis granted `granted` tokens for the lease at `cell`. They are added to what is
 * left (paying any debt first) and, with what is left of the old ones, expire `ttlMs` from now.
 * `dryMs` > 0: the bucket gave less than asked and has no token for that long. Ends the ask.
 *
 * @example
 * leaseGrant(i32, cell, 3, 0, 150);
 */
export function leaseGrant(a: Int32Array, cell: number, granted: number, dryMs: number, ttlMs: number, now: number = leaseClock()): void {
  const i = 2 * cell;
  if (granted > 0) {
    const oldExpiry = Atomics.load(a, i + LEASE.EXPIRY);
    // The new expiry first: a take may then see old tokens with it, never new ones without it.
    Atomics.store(a, i + LEASE.EXPIRY, (now + ttlMs) & 0x7fffffff || 1);
    for (;;) {
      const raw = Atomics.load(a, i + LEASE.TOKENS);
      const t = raw > 0 && !after(oldExpiry, now) ? 0 : raw;
      if (Atomics.compareExchange(a, i + LEASE.TOKENS, raw, t + granted) === raw) break;
    }
  }
  Atomics.store(a, i + LEASE.DRY, dryMs > 0 ? (now + dryMs) & 0x7fffffff || 1 : 0);
  Atomics.store(a, i + LEASE.WANT, 0);
}

/** Main thread: the ask at `cell` will not be answered (Redis away): the next take may ask again. */
export function leaseCancel(a: Int32Array, cell: number): void {
  Atomics.store(a, 2 * cell + LEASE.WANT, 0);
}

/** An empty lease (a route entry claimed for a new key). Only non-zero cells are written: leases no key ever used stay unmapped. */
export function leaseReset(a: Int32Array, cell: number): void {
  const i = 2 * cell;
  if (Atomics.load(a, i + LEASE.TOKENS) !== 0) Atomics.store(a, i + LEASE.TOKENS, 0);
  if (Atomics.load(a, i + LEASE.EXPIRY) !== 0) Atomics.store(a, i + LEASE.EXPIRY, 0);
  if (Atomics.load(a, i + LEASE.DRY) !== 0) Atomics.store(a, i + LEASE.DRY, 0);
  if (Atomics.load(a, i + LEASE.WANT) !== 0) Atomics.store(a, i + LEASE.WANT, 0);
}

/** The ms until a refused request of this lease could pass: to the end of the dry spell, else one interval. */
export function leaseWaitMs(a: Int32Array, cell: number, intervalNs: bigint, now: number = leaseClock()): number {
  const dry = Atomics.load(a, 2 * cell + LEASE.DRY);
  if (dry !== 0 && after(dry, now)) return (dry - now) | 0;
  return Math.max(1, Math.ceil(Number(intervalNs) / 1e6));
}
