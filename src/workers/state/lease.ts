/**
 * Cluster mode's rate-limit leases in the state table: the tokens an instance took from a bucket
 * shared through Redis (src/cluster/ratelimit.ts), spent by every shard with a compare-and-swap,
 * without a lock and without waiting for Redis.
 *
 * A lease is `LEASE_FIELDS` BigInt64 cells (see ./layout.ts: one per listener, one per
 * route-limit entry), named by {@link LEASE}:
 * - `TOKENS`: the tokens left, signed (a 24-bit two's complement in the low bits), and the
 *   monotonic ms at which positive tokens expire (the high bits), in ONE cell, so that a take
 *   reads both and moves the count with a single compare-and-swap. Zeroed memory is an empty
 *   lease. Tokens below zero are credit: a lease that is neither dry nor already `credit` tokens
 *   in debt admits at once and the next grant pays it back, so the first request of a bucket (a
 *   new key, a quiet listener whose lease expired) never waits for Redis. Debt never expires.
 * - `DRY`: until this monotonic ns the shared bucket is known to be empty (Redis granted less
 *   than asked): no credit and no new ask before then.
 * - `WANT`: the monotonic ns of the ask in flight (0: none). A shard takes it by CAS, so one ask
 *   per bucket is outstanding however many shards run low at once. An ask older than
 *   {@link WANT_STALE_NS} is taken over (its answer was lost: Redis went away, a shard died).
 *
 * The clock is `process.hrtime.bigint()`, the same in every thread of the process.
 */

/** Offsets of a lease's cells. */
export const LEASE = { TOKENS: 0, DRY: 1, WANT: 2 } as const;

/** {@link leaseTake} bits: the request is admitted... */
export const ADMITTED = 1;
/** ...and the caller must send an ask for this bucket to the main thread (it holds `WANT` now). */
export const ASK = 2;

/** An ask unanswered this long is lost: the next take may ask again. */
export const WANT_STALE_NS = 2_000_000_000n;

const MASK = 0xffffffn;
const SIGN = 0x800000;
const NS_PER_MS = 1_000_000n;

/** The signed token count of a `TOKENS` cell. */
export function leaseTokens(v: bigint): number {
  const t = Number(v & MASK);
  return t >= SIGN ? t - 0x1000000 : t;
}

function pack(tokens: number, expiryMs: bigint): bigint {
  return (expiryMs << 24n) | (BigInt(tokens) & MASK);
}

/** Tokens usable at `nowMs`: positive ones past their expiry count as none. */
function usable(v: bigint, nowMs: bigint): number {
  const t = leaseTokens(v);
  return t > 0 && v >> 24n <= nowMs ? 0 : t;
}

/** The lease's usable tokens now (negative: debt), for the main thread's next ask and for views. */
export function leaseAvailable(big: BigInt64Array, base: number, now: bigint = process.hrtime.bigint()): number {
  return usable(Atomics.load(big, base + LEASE.TOKENS), now / NS_PER_MS);
}

/**
 * Spends one token of the lease at `base` (any thread). Returns {@link ADMITTED} or 0, with
 * {@link ASK} set when this call took the bucket's `WANT` and must ask for more: when the tokens
 * left are `lease / 2` or fewer after an admit, or on a refusal outside a dry spell.
 *
 * @example
 * const r = leaseTake(big, listenerLeaseCell(slot), lease);
 * if (r & ASK) askMore(slot);
 * if (!(r & ADMITTED)) refuse();
 */
export function leaseTake(big: BigInt64Array, base: number, lease: number, now: bigint = process.hrtime.bigint()): number {
  const nowMs = now / NS_PER_MS;
  const cell = base + LEASE.TOKENS;
  const dry = Atomics.load(big, base + LEASE.DRY) > now;
  const floor = dry ? 0 : -lease;
  for (;;) {
    const v = Atomics.load(big, cell);
    const t = usable(v, nowMs);
    if (t <= floor) return dry ? 0 : want(big, base, now);
    if (Atomics.compareExchange(big, cell, v, pack(t - 1, v >> 24n)) !== v) continue;
    return t - 1 <= lease >> 1 && !dry ? ADMITTED | want(big, base, now) : ADMITTED;
  }
}

/** Takes the bucket's `WANT` (none in flight, or a lost one): {@link ASK}, else 0. */
function want(big: BigInt64Array, base: number, now: bigint): number {
  const w = Atomics.load(big, base + LEASE.WANT);
  if (w !== 0n && now - w < WANT_STALE_NS) return 0;
  return Atomics.compareExchange(big, base + LEASE.WANT, w, now) === w ? ASK : 0;
}

/**
 * Main thread: Redis granted `granted` tokens for the lease at `base`. They are added to what is
 * left (paying any debt first) and, with what is left of the old ones, expire `ttlNs` from now.
 * `dryNs` > 0: the bucket gave less than asked and has no token for that long. Ends the ask.
 *
 * @example
 * leaseGrant(big, base, 3, 0n, 150_000_000n);
 */
export function leaseGrant(big: BigInt64Array, base: number, granted: number, dryNs: bigint, ttlNs: bigint, now: bigint = process.hrtime.bigint()): void {
  const nowMs = now / NS_PER_MS;
  const cell = base + LEASE.TOKENS;
  for (;;) {
    const v = Atomics.load(big, cell);
    const t = usable(v, nowMs);
    const next = granted > 0 ? pack(t + granted, (now + ttlNs) / NS_PER_MS) : pack(t, v >> 24n);
    if (Atomics.compareExchange(big, cell, v, next) === v) break;
  }
  Atomics.store(big, base + LEASE.DRY, dryNs > 0n ? now + dryNs : 0n);
  Atomics.store(big, base + LEASE.WANT, 0n);
}

/** Main thread: the ask at `base` will not be answered (Redis away): the next take may ask again. */
export function leaseCancel(big: BigInt64Array, base: number): void {
  Atomics.store(big, base + LEASE.WANT, 0n);
}

/** An empty lease (a route entry claimed for a new key). */
export function leaseReset(big: BigInt64Array, base: number): void {
  // Only non-zero cells are written: leases no key ever used stay unmapped.
  if (Atomics.load(big, base + LEASE.TOKENS) !== 0n) Atomics.store(big, base + LEASE.TOKENS, 0n);
  if (Atomics.load(big, base + LEASE.DRY) !== 0n) Atomics.store(big, base + LEASE.DRY, 0n);
  if (Atomics.load(big, base + LEASE.WANT) !== 0n) Atomics.store(big, base + LEASE.WANT, 0n);
}

/** The ms until a refused request of this lease could pass: to the end of the dry spell, else one interval. */
export function leaseWaitMs(big: BigInt64Array, base: number, intervalNs: bigint, now: bigint = process.hrtime.bigint()): number {
  const dry = Atomics.load(big, base + LEASE.DRY);
  const ns = dry > now ? dry - now : intervalNs;
  return Math.max(1, Number((ns + NS_PER_MS - 1n) / NS_PER_MS));
}
