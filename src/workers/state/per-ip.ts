/**
 * Per-IP places (`maxConnectionsPerIp`): for each listener, how many connections each client
 * address holds across all shards. The places live in the state table's per-IP region (256
 * striped hash tables of 64 entries per listener, see ./stripe.ts), so the limit holds exactly
 * across shards without a message to the main thread on accept.
 */
import { IP_COUNT_MASK, IP_ENTRIES, IP_ENTRY_MASK, IP_H, IP_LOCKS, IP_STRIPES, IP_STRIPE_ENTRIES, IP_STRIPE_MASK, ipRegion } from './layout.ts';
import { lockOrSteal, lockStripe, rebuildStripe, releaseInStripe } from './stripe.ts';

/**
 * What `ipAcquire` answers: refused, admitted and counted, or admitted without a count (fail open).
 *
 * @example
 * if (table.ipAcquire(slot, shard, key, max) === IP.REJECTED) refuse();
 */
export const IP = { REJECTED: 0, ADMITTED: 1, UNTRACKED: 2 } as const;

/**
 * A shard waits at most this long for a stripe lock to take a place, then admits without counting
 * (never blocks for good). Only a holder that the OS took off the CPU keeps a lock for more than
 * microseconds.
 */
const ACQUIRE_WAIT_MS = 100;
/** ...and this long to give one back (giving up would keep the place for good). */
const RELEASE_WAIT_MS = 1_000;

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

/** Index of the first entry of `key`'s stripe in a listener's per-IP region at `base`. */
const stripeOf = (base: number, key: number): number => base + IP_ENTRIES + (key & IP_STRIPE_MASK) * IP_STRIPE_ENTRIES * 2;

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
    const lock = base + IP_LOCKS + (key & IP_STRIPE_MASK);
    if (!lockStripe(a, lock, shard + 1, ACQUIRE_WAIT_MS)) {
      Atomics.add(a, base + IP_H.UNTRACKED, 1);
      return IP.UNTRACKED;
    }
    const e0 = stripeOf(base, key);
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

  /** Gives back a place taken by {@link acquire} (answered `ADMITTED`). */
  release(slot: number, shard: number, key: number): void {
    const a = this.#a;
    const base = ipRegion(slot);
    const lock = base + IP_LOCKS + (key & IP_STRIPE_MASK);
    // Only a holder killed inside its critical section keeps a lock this long, and the control
    // plane frees it when that shard goes down.
    if (!lockStripe(a, lock, shard + 1, RELEASE_WAIT_MS)) return;
    releaseInStripe(a, stripeOf(base, key), key, shard);
    Atomics.store(a, lock, 0);
  }

  /**
   * Control plane, when `shard` went down: gives back every per-IP place it held in the
   * listener's table, and returns how many. A stripe lock still held by the dead shard is taken
   * over (its thread was killed inside the critical section), and that stripe is rebuilt from
   * its entries.
   */
  releaseShard(slot: number, shard: number): number {
    const a = this.#a;
    const base = ipRegion(slot);
    let freed = 0;
    for (let s = 0; s < IP_STRIPES; s++) {
      const lock = base + IP_LOCKS + s;
      const took = lockOrSteal(a, lock, shard + 1);
      if (took === 0) continue;
      freed += this.#dropShard(base + IP_ENTRIES + s * IP_STRIPE_ENTRIES * 2, shard, took === 2);
      Atomics.store(a, lock, 0);
    }
    return freed;
  }

  /** Drops `shard`'s entries from the stripe at `e0` (lock held); a stolen stripe is always rebuilt. */
  #dropShard(e0: number, shard: number, stolen: boolean): number {
    const a = this.#a;
    let has = stolen;
    for (let i = 0; i < IP_STRIPE_ENTRIES && !has; i++) has = Atomics.load(a, e0 + 2 * i) !== 0 && Atomics.load(a, e0 + 2 * i + 1) >>> 24 === shard;
    return has ? rebuildStripe(a, e0, shard) : 0;
  }

  /** Places held for `key` in the listener, over all shards (a look without the lock: for tests and views). */
  count(slot: number, key: number): number {
    const e0 = stripeOf(ipRegion(slot), key);
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

  /** Connections admitted without a per-IP count (a full stripe, or a lock not had in time). */
  untracked(slot: number): number {
    return Atomics.load(this.#a, ipRegion(slot) + IP_H.UNTRACKED);
  }
}

