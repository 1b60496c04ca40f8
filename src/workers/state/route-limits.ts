/**
 * Route rate limits (`routes[].rateLimit`): a GCRA bucket per (listener, route, client key), in
 * a fixed shared region of the state table's BigInt64 buffer, so that every shard spends one
 * budget per key and the limit is exact across threads.
 *
 * The table: 1024 stripes of 64 entries (1 MiB) for all listeners; see `RL_*` in ./layout.ts.
 * An entry is (hash, TAT). The hash is 64 bits: (listener slot + 1) in its top 7 bits, the route
 * in the next 8, and 49 bits of a seeded hash of (slot, route, key) that also picks the stripe
 * and the home entry. Two distinct keys of one route that agree on those 49 bits share a bucket:
 * about 1 chance in 2^18 that any pair does among 64K live keys. The hash is seeded per table
 * (a random seed written by `StateTable.create`), so colliding keys cannot be prepared offline.
 *
 * An entry whose TAT is not in the future is free: for GCRA an expired TAT is the same as no entry
 * (a full bucket). So nothing ever deletes an entry and no sweeper runs; a new key takes the first
 * free entry of its stripe, scanning from its home. When all 64 entries of the stripe are live
 * entries of other keys, the request is admitted without a bucket (fail open) and counted per
 * listener (`untracked`), like the per-IP limit does.
 *
 * Concurrency. A known key is admitted without a lock: its TAT moves by compare-and-swap, as the
 * listener limit's (./gcra.ts). Claiming an entry for a new key takes the stripe's lock. Why a lock
 * and not a CAS on the hash cell: two threads that meet a new key at once must pick the SAME entry,
 * but "free" depends on each thread's clock, so two lock-free claimers can pick two different
 * entries and the key gets two buckets (twice its budget). Under the lock, a claimer looks for the
 * key again and finds the other's entry. Claims are rare (once per key per idle period), so the
 * lock is cold; the hot path is lock-free. Two invariants make the lock-free path safe while a
 * claimer reuses an expired entry under it:
 * - A claimer first swaps the entry's TAT for a negative marker (-its lock stamp), then writes the
 *   hash, then the key's first TAT. So the hash only changes while the TAT holds a marker.
 * - The non-negative values of a TAT cell only ever grow (GCRA adds the interval to max(TAT, now);
 *   a claim takes an entry whose TAT <= now and writes now + interval). So a TAT that a thread
 *   read, checked the hash after, and swapped successfully was never changed in between: the hash
 *   was the key's all along, and no update is lost. A refusal is decided on a TAT read twice, with
 *   the hash check between.
 * A thread killed inside a claim (a hung shard is terminated) leaves the lock held: the lock holds
 * the monotonic ns when it was taken, and after {@link STALE_NS} the next claimer takes it over and
 * treats any marker left in the stripe as a free entry. A holder that was only preempted for that
 * long and wakes up finds its marker gone and fails open; in the worst case its hash write lands on
 * the entry the new holder just claimed, which then serves another key for one bucket's length.
 *
 * The clock is `process.hrtime.bigint()` (CLOCK_MONOTONIC), the same in every thread.
 */
import { randomInt } from 'node:crypto';
import { isMainThread } from 'node:worker_threads';
import { GatehouseError } from '../../errors.ts';
import { BIG_ROUTE, MAX_LISTENERS, RL_ENTRIES, RL_LOCKS, RL_ROUTES, RL_SEED, RL_STRIPES, RL_STRIPE_ENTRIES, RL_UNTRACKED, routeLeaseCell } from './layout.ts';
import { leaseReset } from './lease.ts';

/** A route-limit call with arguments outside the table (a programming error, never a config one). */
export class RouteLimitError extends GatehouseError {
  readonly code = 'GH_ERR_ROUTE_LIMIT';
  constructor(message: string) {
    super(`route rate limit: ${message}`);
    this.name = 'RouteLimitError';
  }
}

const STRIPE_MASK = RL_STRIPES - 1;
const ENTRY_MASK = RL_STRIPE_ENTRIES - 1;
/** Bits of the first hash half that pick the stripe (the next 6 pick the home entry). */
const STRIPE_BITS = Math.log2(RL_STRIPES);
/** A lock held longer than this was left by a killed (or badly stalled) thread: a claim takes well under a microsecond. */
export const STALE_NS = 10_000_000n;
/** A claimer waits at most this long for a stripe lock, then admits without a bucket (counted). */
const WAIT_MS = 50;
/** A claim whose entry was taken meanwhile by a known key's update looks again, at most this often. */
const CLAIM_TRIES = 8;
/** Returned by the lock-free step when the entry is not (or no longer) the key's: decide under the lock. */
const BUSY = -1;

const pause: () => void = (Atomics as unknown as { pause?: () => void }).pause?.bind(Atomics) ?? (() => {});
/** Worker threads sleep 50 µs between tries after this many spins; the main thread only spins. */
const SPINS_BEFORE_SLEEP = 256;
const canSleep = !isMainThread;

/** The two hash halves of the last {@link hashKey} call (one thread per isolate: no allocation per call). */
let hashA = 0;
let hashB = 0;
/** The entry the last {@link RouteLimits.admit} of this thread decided on (-1: it failed open). */
let lastEntry = -1;

/** Murmur3's 32-bit finaliser: every input bit reaches every output bit. */
function fmix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** Hashes (slot, route, key) into {@link hashA} and {@link hashB}: FNV-1a and a Murmur2-style multiply, both seeded, then finalised. */
function hashKey(seed: number, slot: number, route: number, key: string): void {
  let a = Math.imul(0x811c9dc5 ^ seed, 0x01000193);
  let b = Math.imul(0x9747b28c ^ seed ^ ((slot << 8) | route), 0x5bd1e995);
  a = Math.imul(a ^ slot, 0x01000193);
  a = Math.imul(a ^ route, 0x01000193);
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 13;
  }
  hashA = fmix(a ^ key.length);
  hashB = fmix(b ^ Math.imul(key.length, 0x9e3779b9));
}

/** Whole milliseconds (rounded up, so at least 1) for `ns` > 0. */
const ceilMs = (ns: bigint): number => Number((ns + 999_999n) / 1_000_000n);

/**
 * The keyed GCRA table of every listener's route limits, over a state table's BigInt64 buffer.
 * `StateTable` wraps it (`routeAdmit`, `routeLimitEntries`, `routeLimitUntracked`); tests use it
 * directly to pass their own clock.
 *
 * @example
 * const limits = new RouteLimits(new BigInt64Array(table.buffers.big));
 * const waitMs = limits.admit(slot, route.index, clientIp, intervalNs, burstNs);
 * if (waitMs > 0) reply429({ 'retry-after': Math.ceil(waitMs / 1000) });
 */
export class RouteLimits {
  readonly #big: BigInt64Array;
  /** The same memory as Int32: an entry's hash is read and written as two halves, never as a BigInt. */
  readonly #i32: Int32Array;
  readonly #seed: number;

  constructor(big: BigInt64Array) {
    this.#big = big;
    this.#i32 = new Int32Array(big.buffer, big.byteOffset, big.length * 2);
    this.#seed = Number(Atomics.load(big, BIG_ROUTE + RL_SEED));
  }

  /**
   * Writes a random hash seed into a new buffer, before any thread maps it (`StateTable.create`).
   *
   * @example
   * RouteLimits.seed(new BigInt64Array(buffers.big));
   */
  static seed(big: BigInt64Array): void {
    Atomics.store(big, BIG_ROUTE + RL_SEED, BigInt(randomInt(1, 2 ** 31)));
  }

  /**
   * Admits one request of client `key` on route `route` (0..255) of the listener at `slot`, exactly
   * across threads. Returns 0 when admitted, else the milliseconds until the key would be admitted
   * again (> 0, for `Retry-After`). `intervalNs` is 1e9 / perSecond and `burstNs` is burst × intervalNs
   * (at least one interval). `nowNs` is for tests; it defaults to the monotonic clock.
   *
   * @example
   * limits.admit(0, 2, '10.0.0.7', 100_000_000n, 300_000_000n); // 10 per second, burst 3
   */
  admit(slot: number, route: number, key: string, intervalNs: bigint, burstNs: bigint, nowNs: bigint = process.hrtime.bigint()): number {
    checkArgs(slot, route, intervalNs, burstNs);
    hashKey(this.#seed, slot, route, key);
    const h0 = hashA;
    const h1 = ((slot + 1) << 25) | (route << 17) | (hashB & 0x1ffff);
    const first = (hashA & STRIPE_MASK) * RL_STRIPE_ENTRIES;
    const home = (hashA >>> STRIPE_BITS) & ENTRY_MASK;
    for (let n = 0; n < RL_STRIPE_ENTRIES; n++) {
      const e = first + ((home + n) & ENTRY_MASK);
      if (Atomics.load(this.#i32, 2 * this.#h(e)) !== h0 || Atomics.load(this.#i32, 2 * this.#h(e) + 1) !== h1) continue;
      const r = this.#step(e, h0, h1, nowNs, intervalNs, burstNs);
      if (r !== BUSY) {
        lastEntry = e;
        return r;
      }
      break;
    }
    return this.#claim(slot, first, home, h0, h1, nowNs, intervalNs, burstNs);
  }

  /**
   * Live (not yet expired) entries of the listener at `slot`, all routes: a scan without locks, for
   * views and tests. `nowNs` defaults to the monotonic clock.
   *
   * @example
   * limits.entries(slot); // 0 once every key's bucket is full again
   */
  entries(slot: number, nowNs: bigint = process.hrtime.bigint()): number {
    let n = 0;
    for (let e = 0; e < RL_STRIPES * RL_STRIPE_ENTRIES; e++) {
      if (Atomics.load(this.#i32, 2 * this.#h(e) + 1) >>> 25 === slot + 1 && Atomics.load(this.#big, this.#h(e) + 1) > nowNs) n++;
    }
    return n;
  }

  /**
   * Admits of the listener at `slot` that failed open (the key's stripe was full of live entries of
   * other keys, or its lock could not be had), since the slot was last reset.
   *
   * @example
   * limits.untracked(slot);
   */
  untracked(slot: number): number {
    return Number(Atomics.load(this.#big, BIG_ROUTE + RL_UNTRACKED + slot));
  }

  /**
   * Clears the listener's entries and counter (its slot is being reused; nothing admits on it any
   * more). Cells are read first and only non-zero ones written, so stripes no listener ever used
   * stay unmapped. Each stripe with entries of the listener is cleared under its lock, so that a
   * claim of another listener in the same stripe never interleaves with it.
   *
   * @example
   * limits.reset(slot);
   */
  reset(slot: number): void {
    const a = this.#i32;
    const big = this.#big;
    for (let s = 0; s < RL_STRIPES; s++) {
      const first = s * RL_STRIPE_ENTRIES;
      let has = false;
      for (let j = 0; j < RL_STRIPE_ENTRIES && !has; j++) has = Atomics.load(a, 2 * this.#h(first + j) + 1) >>> 25 === slot + 1;
      if (!has) continue;
      const stamp = lockStripe(big, BIG_ROUTE + RL_LOCKS + s);
      for (let j = 0; j < RL_STRIPE_ENTRIES; j++) {
        const h = this.#h(first + j);
        if (Atomics.load(a, 2 * h + 1) >>> 25 !== slot + 1) continue;
        Atomics.store(a, 2 * h, 0);
        Atomics.store(a, 2 * h + 1, 0);
        Atomics.store(big, h + 1, 0n);
      }
      if (stamp !== 0n) Atomics.compareExchange(big, BIG_ROUTE + RL_LOCKS + s, stamp, 0n);
    }
    const u = BIG_ROUTE + RL_UNTRACKED + slot;
    if (Atomics.load(big, u) !== 0n) Atomics.store(big, u, 0n);
  }

  /**
   * The stripe (0..1023) that client `key` of `route` on the listener at `slot` hashes to in this
   * table: for tests that need keys sharing a stripe.
   *
   * @example
   * const crowded = keys.filter((k) => limits.stripeOf(0, 0, k) === 7);
   */
  stripeOf(slot: number, route: number, key: string): number {
    hashKey(this.#seed, slot, route, key);
    return hashA & STRIPE_MASK;
  }

  /**
   * The entry (0 .. stripes × entries) the last {@link admit} of this thread decided on, or -1
   * when it failed open: cluster mode spends the key's lease at the same index.
   *
   * @example
   * if (limits.admit(slot, route, key, t, b) === 0 && limits.lastEntry() >= 0) spendLease(limits.lastEntry());
   */
  lastEntry(): number {
    return lastEntry;
  }

  /**
   * The key hash that entry `e` holds now, as two Int32 halves joined in a string: an answer to a
   * lease ask is applied to the entry only while it still holds the key it was asked for.
   *
   * @example
   * const owner = limits.entryKey(e);
   */
  entryKey(e: number): string {
    const h = this.#h(e);
    return `${Atomics.load(this.#i32, 2 * h)}:${Atomics.load(this.#i32, 2 * h + 1)}`;
  }

  /** BigInt64 index of entry `e`'s hash cell (its TAT is the next one). */
  #h(e: number): number {
    return BIG_ROUTE + RL_ENTRIES + 2 * e;
  }

  /**
   * One GCRA decision on entry `e`, lock-free: returns 0 (admitted, TAT moved by CAS), the wait in
   * ms (refused), or {@link BUSY} when the entry holds a claim marker or another key's hash.
   */
  #step(e: number, h0: number, h1: number, now: bigint, interval: bigint, burst: bigint): number {
    const big = this.#big;
    const t = this.#h(e) + 1;
    for (;;) {
      const tat = Atomics.load(big, t);
      if (tat < 0n) return BUSY;
      // The hash after the TAT: it can only have changed through a marker, which the CAS below (or
      // the second read on refusal) would see.
      if (Atomics.load(this.#i32, 2 * this.#h(e)) !== h0 || Atomics.load(this.#i32, 2 * this.#h(e) + 1) !== h1) return BUSY;
      const next = (tat > now ? tat : now) + interval;
      const over = next - now - burst;
      if (over > 0n) {
        if (Atomics.load(big, t) !== tat) continue;
        return ceilMs(over);
      }
      if (Atomics.compareExchange(big, t, tat, next) === tat) return 0;
    }
  }

  /**
   * The key has no usable entry (none, or one being claimed): under the stripe lock, look for it
   * again (another thread may have just claimed it), else claim the first free entry from home.
   */
  #claim(slot: number, first: number, home: number, h0: number, h1: number, now: bigint, interval: bigint, burst: bigint): number {
    const big = this.#big;
    const a = this.#i32;
    const lock = BIG_ROUTE + RL_LOCKS + first / RL_STRIPE_ENTRIES;
    const stamp = lockStripe(big, lock);
    if (stamp === 0n) return this.#failOpen(slot);
    const marker = -stamp;
    try {
      for (let tries = 0; tries < CLAIM_TRIES; tries++) {
        let free = -1;
        let mine = -1;
        for (let n = 0; n < RL_STRIPE_ENTRIES; n++) {
          const e = first + ((home + n) & ENTRY_MASK);
          const h = this.#h(e);
          if (Atomics.load(a, 2 * h) === h0 && Atomics.load(a, 2 * h + 1) === h1) {
            mine = e;
            if (Atomics.load(big, h + 1) >= 0n) break;
            // A marker while we hold the lock: a claim for this key that a killed holder left. Its
            // bucket is lost; the key starts again with a full one, here, so it never has two.
            free = e;
            break;
          }
          // Markers under the lock were left by a holder that lost it: free, like expired TATs.
          // (TATs are read only until the first free entry: BigInt loads are what a scan costs.)
          if (free < 0 && Atomics.load(big, h + 1) <= now) free = e;
        }
        if (mine >= 0 && free !== mine) {
          const r = this.#step(mine, h0, h1, now, interval, burst);
          lastEntry = mine;
          return r === BUSY ? this.#failOpen(slot) : r;
        }
        if (free < 0) return this.#failOpen(slot);
        const t = this.#h(free) + 1;
        const old = Atomics.load(big, t);
        // A known key's update may have revived the entry since the scan: look again.
        if (old > now || Atomics.compareExchange(big, t, old, marker) !== old) continue;
        // A new key starts with an empty lease (cluster mode), never the last key's.
        leaseReset(a, routeLeaseCell(free));
        Atomics.store(a, 2 * this.#h(free), h0);
        Atomics.store(a, 2 * this.#h(free) + 1, h1);
        // A new bucket is full, and burst >= interval: the first request is always admitted.
        if (Atomics.compareExchange(big, t, marker, now + interval) !== marker) return this.#failOpen(slot);
        lastEntry = free;
        return 0;
      }
      return this.#failOpen(slot);
    } finally {
      Atomics.compareExchange(big, lock, stamp, 0n);
    }
  }

  #failOpen(slot: number): number {
    lastEntry = -1;
    Atomics.add(this.#big, BIG_ROUTE + RL_UNTRACKED + slot, 1n);
    return 0;
  }
}

function checkArgs(slot: number, route: number, intervalNs: bigint, burstNs: bigint): void {
  if (!(Number.isInteger(slot) && slot >= 0 && slot < MAX_LISTENERS)) throw new RouteLimitError(`listener slot ${slot} is not an integer from 0 to ${MAX_LISTENERS - 1}`);
  if (!(Number.isInteger(route) && route >= 0 && route < RL_ROUTES)) throw new RouteLimitError(`route ${route} is not an integer from 0 to ${RL_ROUTES - 1}`);
  if (intervalNs <= 0n || burstNs < intervalNs) throw new RouteLimitError(`interval ${intervalNs} ns and burst ${burstNs} ns: the interval must be > 0 and the burst at least one interval`);
}

/**
 * Takes the stripe lock at `lock`: returns the stamp written there (the monotonic ns when it was
 * taken, > 0), or 0n when it could not be had within {@link WAIT_MS}. A lock whose stamp is older
 * than {@link STALE_NS} is taken over. Release with a CAS from the stamp to 0, so a holder whose
 * lock was taken over releases nothing.
 */
function lockStripe(big: BigInt64Array, lock: number): bigint {
  let now = process.hrtime.bigint();
  let held = Atomics.compareExchange(big, lock, 0n, now);
  if (held === 0n) return now;
  const until = performance.now() + WAIT_MS;
  for (let n = 1; ; n++) {
    if (held === 0n || now - held > STALE_NS) {
      now = process.hrtime.bigint();
      const got = Atomics.compareExchange(big, lock, held, now);
      if (got === held) return now;
      held = got;
      continue;
    }
    if (canSleep && n > SPINS_BEFORE_SLEEP) Atomics.wait(big, lock, held, 0.05);
    else pause();
    held = Atomics.load(big, lock);
    if ((n & 63) === 0) {
      if (performance.now() > until) return 0n;
      now = process.hrtime.bigint();
    }
  }
}
