/**
 * Per-IP places (`maxConnectionsPerIp`): for each listener, how many connections each client
 * address holds across all shards. The places live in the state table's per-IP region (256
 * striped hash tables of 64 entries per listener, see ./stripe.ts), so the limit holds exactly
 * across shards without a message to the main thread on accept.
 *
 * A place is never lost. Taking one may fail open (admitted, not counted) when its stripe lock is
 * busy, but giving one back must happen, or the IP stays counted for good. A release (or a dead
 * shard's stripe) whose lock cannot be had in time is queued in this thread and given back as
 * soon as the lock is free: by the next acquire or release of this thread, and by a retry timer
 * that exists only while something is queued.
 */
import { isMainThread } from 'node:worker_threads';
import type { Logger } from 'pino';
import { IP_COUNT_MASK, IP_ENTRIES, IP_ENTRY_MASK, IP_H, IP_LOCKS, IP_STRIPES, IP_STRIPE_ENTRIES, IP_STRIPE_MASK, ipRegion } from './layout.ts';
import { OWNER_MAIN, lockOrSteal, lockStripe, rebuildStripe, releaseInStripe } from './stripe.ts';

/**
 * What `ipAcquire` answers: refused, admitted and counted, or admitted without a count (fail open).
 *
 * @example
 * if (table.ipAcquire(slot, shard, key, max) === IP.REJECTED) refuse();
 */
export const IP = { REJECTED: 0, ADMITTED: 1, UNTRACKED: 2 } as const;

/**
 * A shard waits at most this long for a stripe lock to take a place (then it admits without
 * counting), and the control plane this long for a dead shard's stripe (then it is queued). Only
 * a holder that the OS took off the CPU, or one killed inside its critical section, keeps a lock
 * for more than microseconds.
 */
const WAIT_MS = 100;
/**
 * ...and this long to give a place back before queueing the release. A worker thread sleeps
 * between tries and can outwait a preempted holder, so it queues only for a holder that is
 * really stuck; the main thread runs the control plane and never waits long.
 */
const RELEASE_WAIT_MS = isMainThread ? WAIT_MS : 1_000;
/** Queued releases are retried this often while any is left. */
const RETRY_MS = 10;
/** A deferred release is logged at most this often (with the count since the last line). */
const LOG_EVERY_MS = 10_000;

/**
 * The per-IP key of a client address: its 32-bit FNV-1a hash, never 0 (0 marks a free entry).
 * Two addresses with the same hash share a count, a 1 in 4 billion chance per pair.
 *
 * @example
 * table.ipAcquire(slot, shard, ipKey(socket.remoteAddress!), 10);
 */
export function ipKey(address: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < address.length; i++) h = Math.imul(h ^ address.charCodeAt(i), 0x01000193);
  return h | 0 || 1;
}

/**
 * A per-IP entry in use: `shard` holds `count` places for client `key` in the listener at `slot`.
 *
 * @example
 * table.nonZero().perIp; // [{ slot: 0, key: 1234, shard: 1, count: 2 }]
 */
export interface IpEntry {
  slot: number;
  key: number;
  shard: number;
  count: number;
}

/** Index of the first entry of stripe `s` in a listener's per-IP region at `base`. */
const stripeAt = (base: number, s: number): number => base + IP_ENTRIES + s * IP_STRIPE_ENTRIES * 2;

/** Work waiting for a stripe lock: one place of `shard` for `key`, or (key 0) every place of a dead `shard` in the stripe. */
interface Queued {
  slot: number;
  shard: number;
  stripe: number;
  key: number;
}

/**
 * The per-IP places of every listener, over one thread's view of the table's Int32 buffer. The
 * state table delegates its `ip*` methods here.
 *
 * @example
 * const ip = new IpPlaces(i32);
 * if (ip.acquire(slot, shard, key, 10) === IP.ADMITTED) ip.release(slot, shard, key);
 */
export class IpPlaces {
  readonly #a: Int32Array;
  readonly #queued: Queued[] = [];
  #timer: NodeJS.Timeout | undefined;
  /** Where a queued release is logged (`StateTable.logTo`); not logged without one. */
  log: Logger | undefined;
  #loggedAt = -Infinity;
  #unlogged = 0;

  constructor(i32: Int32Array) {
    this.#a = i32;
  }

  /**
   * Takes a place for client `key` on `shard` when the listener's places for that key, summed
   * over shards, are under `max`. The stripe's spinlock is held for a few loads and stores
   * (linear probing from the key's home to the first free entry).
   */
  acquire(slot: number, shard: number, key: number, max: number): number {
    const a = this.#a;
    const base = ipRegion(slot);
    const stripe = key & IP_STRIPE_MASK;
    const lock = base + IP_LOCKS + stripe;
    if (!lockStripe(a, lock, shard + 1, WAIT_MS)) {
      Atomics.add(a, base + IP_H.UNTRACKED, 1);
      return IP.UNTRACKED;
    }
    // This thread's releases queued for this stripe count first: the limit must not see them.
    if (this.#queued.length > 0) this.#applyQueued(slot, stripe);
    const e0 = stripeAt(base, stripe);
    let total = 0;
    let mine = -1;
    let free = -1;
    // Every entry of a key sits between its home and the first free entry (no tombstones).
    for (let n = 0, i = (key >>> 8) & IP_ENTRY_MASK; n < IP_STRIPE_ENTRIES; n++, i = (i + 1) & IP_ENTRY_MASK) {
      const k = Atomics.load(a, e0 + 2 * i);
      if (k === 0) {
        free = i;
        break;
      }
      if (k !== key) continue;
      const v = Atomics.load(a, e0 + 2 * i + 1);
      total += v & IP_COUNT_MASK;
      if (v >>> 24 === shard) mine = i;
    }
    let r: number = IP.ADMITTED;
    if (total >= max) r = IP.REJECTED;
    else if (mine >= 0) Atomics.add(a, e0 + 2 * mine + 1, 1);
    else if (free >= 0) {
      // The value before the key: an entry is live once its key is written.
      Atomics.store(a, e0 + 2 * free + 1, (shard << 24) | 1);
      Atomics.store(a, e0 + 2 * free, key);
    } else r = IP.UNTRACKED;
    Atomics.store(a, lock, 0);
    if (r === IP.UNTRACKED) Atomics.add(a, base + IP_H.UNTRACKED, 1);
    return r;
  }

  /**
   * Gives back a place taken by {@link acquire} (answered `ADMITTED`). When the stripe lock cannot
   * be had within {@link RELEASE_WAIT_MS}, the release is queued and done once the lock is free.
   */
  release(slot: number, shard: number, key: number): void {
    if (this.#queued.length > 0) this.#retry();
    const a = this.#a;
    const base = ipRegion(slot);
    const stripe = key & IP_STRIPE_MASK;
    const lock = base + IP_LOCKS + stripe;
    if (!lockStripe(a, lock, shard + 1, RELEASE_WAIT_MS)) {
      this.#defer({ slot, shard, stripe, key }, lock);
      return;
    }
    releaseInStripe(a, stripeAt(base, stripe), key, shard);
    Atomics.store(a, lock, 0);
  }

  /**
   * Control plane, when `shard` went down: gives back every per-IP place it held in the
   * listener's table, and returns how many. A stripe lock still held by the dead shard is taken
   * over (its thread was killed inside the critical section), and that stripe is rebuilt from
   * its entries. A stripe that another holder keeps too long is queued and done once it is free
   * (its places are not in the returned count).
   */
  releaseShard(slot: number, shard: number): number {
    if (this.#queued.length > 0) this.#retry();
    const a = this.#a;
    const base = ipRegion(slot);
    let freed = 0;
    for (let s = 0; s < IP_STRIPES; s++) {
      const lock = base + IP_LOCKS + s;
      const took = lockOrSteal(a, lock, shard + 1, WAIT_MS);
      if (took === 0) {
        this.#defer({ slot, shard, stripe: s, key: 0 }, lock);
        continue;
      }
      freed += dropShard(a, stripeAt(base, s), shard, took === 2);
      Atomics.store(a, lock, 0);
    }
    return freed;
  }

  /** Places held for `key` in the listener, over all shards (a look without the lock: for tests and views). */
  count(slot: number, key: number): number {
    const e0 = stripeAt(ipRegion(slot), key & IP_STRIPE_MASK);
    let n = 0;
    for (let i = 0; i < IP_STRIPE_ENTRIES; i++) if (Atomics.load(this.#a, e0 + 2 * i) === key) n += Atomics.load(this.#a, e0 + 2 * i + 1) & IP_COUNT_MASK;
    return n;
  }

  /** Used per-IP entries of the listener, all stripes (0 once every place is given back). */
  entries(slot: number): number {
    const e0 = ipRegion(slot) + IP_ENTRIES;
    let n = 0;
    for (let i = 0; i < IP_STRIPES * IP_STRIPE_ENTRIES; i++) if (Atomics.load(this.#a, e0 + 2 * i) !== 0) n++;
    return n;
  }

  /** Every entry in use in the listener's table (a look without the locks: for tests and views). */
  list(slot: number): IpEntry[] {
    const e0 = ipRegion(slot) + IP_ENTRIES;
    const out: IpEntry[] = [];
    for (let i = 0; i < IP_STRIPES * IP_STRIPE_ENTRIES; i++) {
      const key = Atomics.load(this.#a, e0 + 2 * i);
      if (key === 0) continue;
      const v = Atomics.load(this.#a, e0 + 2 * i + 1);
      out.push({ slot, key, shard: v >>> 24, count: v & IP_COUNT_MASK });
    }
    return out;
  }

  /** Header counter `field` (`IP_H`) of the listener. */
  header(slot: number, field: number): number {
    return Atomics.load(this.#a, ipRegion(slot) + field);
  }

  /** Queues work whose stripe lock is busy, counts it, logs (rate-limited) and arms the retry timer. */
  #defer(q: Queued, lock: number): void {
    const base = ipRegion(q.slot);
    this.#queued.push(q);
    Atomics.add(this.#a, base + IP_H.DEFERRED, 1);
    Atomics.add(this.#a, base + IP_H.PENDING, 1);
    this.#unlogged++;
    const now = performance.now();
    if (this.log && now - this.#loggedAt >= LOG_EVERY_MS) {
      const holder = Atomics.load(this.#a, lock);
      this.log.warn(
        { slot: q.slot, shard: q.shard, stripe: q.stripe, lockHolder: holder === OWNER_MAIN ? 'main' : `shard ${holder - 1}`, deferred: this.#unlogged, waitedMs: q.key === 0 ? WAIT_MS : RELEASE_WAIT_MS },
        q.key === 0 ? 'per-IP places of a dead shard: stripe lock busy, given back once free' : 'per-IP release: stripe lock busy, the place is given back once free',
      );
      this.#loggedAt = now;
      this.#unlogged = 0;
    }
    this.#arm();
  }

  #arm(): void {
    if (this.#timer || this.#queued.length === 0) return;
    // unref: a queued release must not keep a stopping thread alive; it is retried while it runs.
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#retry();
      this.#arm();
    }, RETRY_MS).unref();
  }

  /** Tries every queued item once, without waiting for a lock. */
  #retry(): void {
    const a = this.#a;
    for (let i = 0; i < this.#queued.length; ) {
      const q = this.#queued[i]!;
      const base = ipRegion(q.slot);
      const lock = base + IP_LOCKS + q.stripe;
      if (Atomics.compareExchange(a, lock, 0, q.key === 0 ? OWNER_MAIN : q.shard + 1) !== 0) {
        i++;
        continue;
      }
      const e0 = stripeAt(base, q.stripe);
      if (q.key === 0) dropShard(a, e0, q.shard, false);
      else releaseInStripe(a, e0, q.key, q.shard);
      Atomics.store(a, lock, 0);
      this.#done(i);
    }
  }

  /** Applies this thread's queued releases for a stripe whose lock it holds. */
  #applyQueued(slot: number, stripe: number): void {
    const e0 = stripeAt(ipRegion(slot), stripe);
    for (let i = 0; i < this.#queued.length; ) {
      const q = this.#queued[i]!;
      if (q.slot !== slot || q.stripe !== stripe) {
        i++;
        continue;
      }
      if (q.key === 0) dropShard(this.#a, e0, q.shard, false);
      else releaseInStripe(this.#a, e0, q.key, q.shard);
      this.#done(i);
    }
  }

  #done(i: number): void {
    const q = this.#queued[i]!;
    this.#queued.splice(i, 1);
    Atomics.sub(this.#a, ipRegion(q.slot) + IP_H.PENDING, 1);
    if (this.#queued.length === 0 && this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }
}

/** Drops `shard`'s entries from the stripe at `e0` (lock held); a stolen stripe is always rebuilt. */
function dropShard(a: Int32Array, e0: number, shard: number, stolen: boolean): number {
  let has = stolen;
  for (let i = 0; i < IP_STRIPE_ENTRIES && !has; i++) has = Atomics.load(a, e0 + 2 * i) !== 0 && Atomics.load(a, e0 + 2 * i + 1) >>> 24 === shard;
  return has ? rebuildStripe(a, e0, shard) : 0;
}
