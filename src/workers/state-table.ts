/**
 * The shared state table: one `SharedArrayBuffer` that the control plane and every shard map,
 * read and written lock-free with `Atomics` (DESIGN.md section 1). Decisions are made by
 * control-plane actors and published here; shards write only their own counter rows, except the
 * few cells that are shared on purpose (a listener's live connection count, a backend's active
 * connections), which are updated with atomic add/sub, a listener's rate-limit cell (compare-and-
 * swap), and its per-IP places, the one region kept under (striped, short-held) spinlocks.
 *
 * Slots (which row belongs to which listener or backend) are given out by the main thread's
 * {@link SlotAllocator} and shipped to shards in their config, so a name maps to the same row
 * everywhere and survives reloads.
 *
 * @example
 * const table = StateTable.create();
 * table.listenerAdd(0, slot, L.ACTIVE, 1);        // on shard 0
 * table.listenerSum(slot, L.ACTIVE);             // main thread: summed over shards
 */
import { isMainThread } from 'node:worker_threads';

export const MAX_SHARDS = 64;
export const MAX_LISTENERS = 64;
export const MAX_BACKENDS = 1024;

/** Int32 fields of a (shard, listener) row. */
export const L = {
  ACTIVE: 0,
  OK: 1,
  RATE_LIMITED: 2,
  OVER_LIMIT: 3,
  NO_BACKEND: 4,
  BACKEND_ERROR: 5,
  TIMEOUT: 6,
  ERROR: 7,
  /** Hub: client frames forwarded toward a node (`gatehouse_hub_messages_total{direction="client_to_node"}`). */
  HUB_IN: 8,
  /** Hub: frames written to clients (`direction="node_to_client"`, one per client reached). */
  HUB_OUT: 9,
  /** Hub drops (`gatehouse_hub_dropped_total{reason}`): oldest frame dropped from a full send queue. */
  HUB_DROP_QUEUE: 10,
  /** A client frame refused as `bad_request` (malformed JSON, unknown type, missing fields, binary). */
  HUB_DROP_BAD: 11,
  /** A client `send`/`request` refused as `node_unavailable`. */
  HUB_DROP_UNAVAILABLE: 12,
  /** A frame over `maxMessageSize` (the client is closed with 1009). */
  HUB_DROP_OVERSIZE: 13,
  /** A client frame refused by the per-client inbound rate limit (a flood). */
  HUB_DROP_RATE: 14,
  /** A slow consumer closed with 1013 (`onOverflow: close`). */
  HUB_SLOW_CLOSED: 15,
} as const;
const L_FIELDS = 16;
/** `gatehouse_hub_dropped_total{reason}` label of each hub drop counter. */
export const HUB_DROPS: Record<string, number> = {
  queue_full: L.HUB_DROP_QUEUE,
  bad_request: L.HUB_DROP_BAD,
  node_unavailable: L.HUB_DROP_UNAVAILABLE,
  oversize: L.HUB_DROP_OVERSIZE,
  rate_limited: L.HUB_DROP_RATE,
  slow_consumer: L.HUB_SLOW_CLOSED,
};
/** The outcome label of each counter field (contract `gatehouse_connections_total{outcome}`). */
export const OUTCOMES: Record<string, number> = {
  ok: L.OK,
  rate_limited: L.RATE_LIMITED,
  over_limit: L.OVER_LIMIT,
  no_backend: L.NO_BACKEND,
  backend_error: L.BACKEND_ERROR,
  timeout: L.TIMEOUT,
  error: L.ERROR,
};
export type Outcome = keyof typeof OUTCOMES & string;

/** BigInt64 fields of a (shard, listener) row. */
export const LB = { BYTES_IN: 0, BYTES_OUT: 1 } as const;
const LB_FIELDS = 2;

/** Int32 fields of a listener-wide row (all shards). */
export const LG = { ACTIVE: 0 } as const;
const LG_FIELDS = 4;

/**
 * Int32 fields of a backend row. HEALTHY (the probe's verdict) and BREAKER (0 closed, 1 open,
 * 2 half-open) are written by the control plane's actors; PERMIT is the half-open trial permit a
 * shard takes with compare-and-swap; ACTIVE counts connections on every shard; FAILS counts
 * consecutive failed connects seen by any shard (a success resets it).
 */
export const B = { HEALTHY: 0, BREAKER: 1, PERMIT: 2, ACTIVE: 3, FAILS: 4 } as const;
const B_FIELDS = 8;

/** Int32 fields of a shard row. */
/** Int32 fields of a shard's row: UP (1 while it runs), HUB_DONE (hub-deliver messages it has processed, for node pacing). */
export const S = { UP: 0, HUB_DONE: 1 } as const;
const S_FIELDS = 2;

/**
 * Per-IP places (`maxConnectionsPerIp`), per listener: {@link IP_STRIPES} open-addressing tables
 * of {@link IP_STRIPE_ENTRIES} entries, each guarded by a spinlock. An entry is (key, shard << 24 |
 * count): the places that one shard holds for one client IP, so that a dead shard's places can be
 * found and given back (`ipReleaseShard`). An IP's count across shards is the sum of its entries.
 */
export const IP_STRIPES = 256;
export const IP_STRIPE_ENTRIES = 64;
/** What `ipAcquire` answers: refused, admitted and counted, or admitted without a count (fail open). */
export const IP = { REJECTED: 0, ADMITTED: 1, UNTRACKED: 2 } as const;
const IP_STRIPE_MASK = IP_STRIPES - 1;
const IP_ENTRY_MASK = IP_STRIPE_ENTRIES - 1;
const IP_COUNT_MASK = 0xffffff;
/** Int32 header of a listener's per-IP region: admissions that could not be counted (fail open). */
const IP_H_UNTRACKED = 0;
const IP_HEADER = 4;
const IP_LOCKS = IP_HEADER;
const IP_ENTRIES = IP_LOCKS + IP_STRIPES;
const IP_LISTENER_LEN = IP_ENTRIES + IP_STRIPES * IP_STRIPE_ENTRIES * 2;
/** A stripe lock's owner: shard N is N + 1 (0 is free); the control plane uses its own id. */
const OWNER_MAIN = 0x10000;
/**
 * A shard waits at most this long for a stripe lock to take a place, then admits without counting
 * (never blocks for good). Only a holder that the OS took off the CPU keeps a lock for more than
 * microseconds.
 */
const ACQUIRE_WAIT_MS = 100;
/** ...and this long to give one back (giving up would keep the place for good). */
const RELEASE_WAIT_MS = 1_000;
/** The control plane takes a dead shard's lock over after this long (the holder was killed inside it). */
const STEAL_AFTER_MS = 20;
/** ...and gives up on a stripe that a live shard holds for this long (never reached in practice). */
const GIVE_UP_MS = 1_000;

const I32_LISTENER = 0;
const I32_LISTENER_GLOBAL = I32_LISTENER + MAX_SHARDS * MAX_LISTENERS * L_FIELDS;
const I32_BACKEND = I32_LISTENER_GLOBAL + MAX_LISTENERS * LG_FIELDS;
const I32_SHARD = I32_BACKEND + MAX_BACKENDS * B_FIELDS;
const I32_IP = I32_SHARD + MAX_SHARDS * S_FIELDS;
/** Int32 per (shard, backend): the connections that shard has on that backend (its share of B.ACTIVE). */
const I32_SHARD_BACKEND = I32_IP + MAX_LISTENERS * IP_LISTENER_LEN;
const I32_LEN = I32_SHARD_BACKEND + MAX_SHARDS * MAX_BACKENDS;
/** BigInt64: per (shard, listener) bytes, then one GCRA cell (theoretical arrival time, ns) per listener. */
const BIG_RATE = MAX_SHARDS * MAX_LISTENERS * LB_FIELDS;
const BIG_LEN = BIG_RATE + MAX_LISTENERS;

const pause: () => void = (Atomics as unknown as { pause?: () => void }).pause?.bind(Atomics) ?? (() => {});
/**
 * After this many spins a worker thread sleeps 50 µs between tries (`Atomics.wait` with a timeout,
 * no notify needed), leaving the CPU to a holder that was preempted. The main thread (the control
 * plane, or the shard with `workers: 0`) never waits: it only spins.
 */
const SPINS_BEFORE_SLEEP = 256;
const canSleep = !isMainThread;

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

export interface StateTableBuffers {
  i32: SharedArrayBuffer;
  big: SharedArrayBuffer;
}

export class StateTable {
  readonly buffers: StateTableBuffers;
  readonly #i32: Int32Array;
  readonly #big: BigInt64Array;

  private constructor(buffers: StateTableBuffers) {
    this.buffers = buffers;
    this.#i32 = new Int32Array(buffers.i32);
    this.#big = new BigInt64Array(buffers.big);
  }

  /** A new, zeroed table (main thread). Backends start healthy with a closed breaker. */
  static create(): StateTable {
    const t = new StateTable({ i32: new SharedArrayBuffer(I32_LEN * 4), big: new SharedArrayBuffer(BIG_LEN * 8) });
    for (let b = 0; b < MAX_BACKENDS; b++) t.#i32[I32_BACKEND + b * B_FIELDS + B.HEALTHY] = 1;
    return t;
  }

  /** Maps a table whose buffers came from another thread. */
  static attach(buffers: StateTableBuffers): StateTable {
    return new StateTable(buffers);
  }

  // Per (shard, listener) rows: written by that shard only.
  listenerAdd(shard: number, slot: number, field: number, n: number): void {
    Atomics.add(this.#i32, I32_LISTENER + (shard * MAX_LISTENERS + slot) * L_FIELDS + field, n);
  }

  listenerGet(shard: number, slot: number, field: number): number {
    return Atomics.load(this.#i32, I32_LISTENER + (shard * MAX_LISTENERS + slot) * L_FIELDS + field);
  }

  bytesAdd(shard: number, slot: number, inBytes: number, outBytes: number): void {
    const i = (shard * MAX_LISTENERS + slot) * LB_FIELDS;
    if (inBytes) Atomics.add(this.#big, i + LB.BYTES_IN, BigInt(inBytes));
    if (outBytes) Atomics.add(this.#big, i + LB.BYTES_OUT, BigInt(outBytes));
  }

  bytesGet(shard: number, slot: number, field: number): number {
    return Number(Atomics.load(this.#big, (shard * MAX_LISTENERS + slot) * LB_FIELDS + field));
  }

  /** Sum of a listener field over shards [0, shards). */
  listenerSum(slot: number, field: number, shards = MAX_SHARDS): number {
    let n = 0;
    for (let s = 0; s < shards; s++) n += this.listenerGet(s, slot, field);
    return n;
  }

  /** Zeroes a listener's rows (its slot is being reused by another listener). */
  resetListener(slot: number): void {
    for (let s = 0; s < MAX_SHARDS; s++) {
      const base = I32_LISTENER + (s * MAX_LISTENERS + slot) * L_FIELDS;
      for (let f = 0; f < L_FIELDS; f++) Atomics.store(this.#i32, base + f, 0);
      const bb = (s * MAX_LISTENERS + slot) * LB_FIELDS;
      for (let f = 0; f < LB_FIELDS; f++) Atomics.store(this.#big, bb + f, 0n);
    }
    for (let f = 0; f < LG_FIELDS; f++) Atomics.store(this.#i32, I32_LISTENER_GLOBAL + slot * LG_FIELDS + f, 0);
    Atomics.store(this.#big, BIG_RATE + slot, 0n);
    // Only non-zero cells are written: pages of the region no listener ever used stay unmapped.
    const ip = I32_IP + slot * IP_LISTENER_LEN;
    for (let i = ip; i < ip + IP_LISTENER_LEN; i++) if (Atomics.load(this.#i32, i) !== 0) Atomics.store(this.#i32, i, 0);
  }

  /**
   * Takes one place in a listener-wide limit, exactly across shards: the add is atomic, and a
   * taker that overshoots gives its place back. Returns false when the listener is full.
   */
  listenerAcquire(slot: number, max: number): boolean {
    const i = I32_LISTENER_GLOBAL + slot * LG_FIELDS + LG.ACTIVE;
    if (Atomics.add(this.#i32, i, 1) >= max) {
      Atomics.sub(this.#i32, i, 1);
      return false;
    }
    return true;
  }

  /** Gives back `n` places (1 by default) in a listener-wide limit. */
  listenerRelease(slot: number, n = 1): void {
    Atomics.sub(this.#i32, I32_LISTENER_GLOBAL + slot * LG_FIELDS + LG.ACTIVE, n);
  }

  listenerActiveAll(slot: number): number {
    return Atomics.load(this.#i32, I32_LISTENER_GLOBAL + slot * LG_FIELDS + LG.ACTIVE);
  }

  /**
   * The listener's new-connection rate limit (GCRA, the generic cell rate algorithm: a token
   * bucket kept as one theoretical arrival time), exact across shards. `intervalNs` is 1e9 /
   * perSecond and `burstNs` is burst × intervalNs. A connection is admitted when
   * max(TAT, now) + interval - now <= burst × interval, and TAT moves to max(TAT, now) + interval
   * by compare-and-swap, so racing shards admit exactly `burst` at once (plus what refills
   * meanwhile). TAT 0 (a new or reset slot) is a full bucket. The clock is CLOCK_MONOTONIC
   * (`process.hrtime.bigint()`), the same in every thread of the process.
   */
  rateAdmit(slot: number, intervalNs: bigint, burstNs: bigint): boolean {
    const i = BIG_RATE + slot;
    const now = process.hrtime.bigint();
    for (;;) {
      const tat = Atomics.load(this.#big, i);
      const next = (tat > now ? tat : now) + intervalNs;
      if (next - now > burstNs) return false;
      if (Atomics.compareExchange(this.#big, i, tat, next) === tat) return true;
    }
  }

  /**
   * Takes a place for client `key` ({@link ipKey}) on `shard` when the listener's places for that
   * key, summed over shards, are under `max`. Answers {@link IP}: `REJECTED`, `ADMITTED` (give it
   * back with {@link ipRelease}), or `UNTRACKED`: admitted without a count, because the key's
   * stripe is full or its lock could not be had in time. Failing open keeps a full table from
   * refusing every new client of a busy listener; it is counted (`ipUntracked`).
   *
   * The stripe's spinlock is held for a few loads and stores (linear probing from the key's home
   * to the first free entry), and never waited on with `Atomics.wait`.
   */
  ipAcquire(slot: number, shard: number, key: number, max: number): number {
    const a = this.#i32;
    const base = I32_IP + slot * IP_LISTENER_LEN;
    const lock = base + IP_LOCKS + (key & IP_STRIPE_MASK);
    if (!this.#lock(lock, shard + 1, ACQUIRE_WAIT_MS)) {
      Atomics.add(a, base + IP_H_UNTRACKED, 1);
      return IP.UNTRACKED;
    }
    const e0 = base + IP_ENTRIES + (key & IP_STRIPE_MASK) * IP_STRIPE_ENTRIES * 2;
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
    if (r === IP.UNTRACKED) Atomics.add(a, base + IP_H_UNTRACKED, 1);
    return r;
  }

  /** Gives back a place taken by {@link ipAcquire} (answered `ADMITTED`). A free entry is deleted by backward shift. */
  ipRelease(slot: number, shard: number, key: number): void {
    const a = this.#i32;
    const base = I32_IP + slot * IP_LISTENER_LEN;
    const lock = base + IP_LOCKS + (key & IP_STRIPE_MASK);
    // Only a holder killed inside its critical section keeps a lock this long, and the control
    // plane frees it when that shard goes down.
    if (!this.#lock(lock, shard + 1, RELEASE_WAIT_MS)) return;
    const e0 = base + IP_ENTRIES + (key & IP_STRIPE_MASK) * IP_STRIPE_ENTRIES * 2;
    for (let n = 0, i = (key >>> 8) & IP_ENTRY_MASK; n < IP_STRIPE_ENTRIES; n++, i = (i + 1) & IP_ENTRY_MASK) {
      const k = Atomics.load(a, e0 + 2 * i);
      if (k === 0) break;
      if (k !== key) continue;
      const v = Atomics.load(a, e0 + 2 * i + 1);
      if (v >>> 24 !== shard) continue;
      if ((v & IP_COUNT_MASK) > 1) Atomics.store(a, e0 + 2 * i + 1, v - 1);
      else deleteEntry(a, e0, i);
      break;
    }
    Atomics.store(a, lock, 0);
  }

  /**
   * Control plane, when `shard` went down: gives back every per-IP place it held in the
   * listener's table, and returns how many. A stripe lock still held by the dead shard after
   * {@link STEAL_AFTER_MS} is taken over (its thread was killed inside the critical section), and
   * that stripe is rebuilt from its entries: a half-done move leaves at most an exact duplicate,
   * which the rebuild drops.
   */
  ipReleaseShard(slot: number, shard: number): number {
    const a = this.#i32;
    const base = I32_IP + slot * IP_LISTENER_LEN;
    const dead = shard + 1;
    let freed = 0;
    for (let s = 0; s < IP_STRIPES; s++) {
      const lock = base + IP_LOCKS + s;
      const e0 = base + IP_ENTRIES + s * IP_STRIPE_ENTRIES * 2;
      let stolen = false;
      if (Atomics.compareExchange(a, lock, 0, OWNER_MAIN) !== 0) {
        const took = this.#lockOrSteal(lock, dead);
        if (took === 0) continue;
        stolen = took === 2;
      }
      let has = stolen;
      for (let i = 0; i < IP_STRIPE_ENTRIES && !has; i++) {
        has = Atomics.load(a, e0 + 2 * i) !== 0 && Atomics.load(a, e0 + 2 * i + 1) >>> 24 === shard;
      }
      if (has) freed += rebuildStripe(a, e0, shard);
      Atomics.store(a, lock, 0);
    }
    return freed;
  }

  /** Places held for `key` in the listener, over all shards (a look without the lock: for tests and views). */
  ipCount(slot: number, key: number): number {
    const e0 = I32_IP + slot * IP_LISTENER_LEN + IP_ENTRIES + (key & IP_STRIPE_MASK) * IP_STRIPE_ENTRIES * 2;
    let n = 0;
    for (let i = 0; i < IP_STRIPE_ENTRIES; i++) {
      if (Atomics.load(this.#i32, e0 + 2 * i) === key) n += Atomics.load(this.#i32, e0 + 2 * i + 1) & IP_COUNT_MASK;
    }
    return n;
  }

  /** Used per-IP entries of the listener, all stripes (0 once every place is given back). */
  ipEntries(slot: number): number {
    const e0 = I32_IP + slot * IP_LISTENER_LEN + IP_ENTRIES;
    let n = 0;
    for (let i = 0; i < IP_STRIPES * IP_STRIPE_ENTRIES; i++) if (Atomics.load(this.#i32, e0 + 2 * i) !== 0) n++;
    return n;
  }

  /** Connections admitted without a per-IP count (a full stripe, or a lock not had in time). */
  ipUntracked(slot: number): number {
    return Atomics.load(this.#i32, I32_IP + slot * IP_LISTENER_LEN + IP_H_UNTRACKED);
  }

  /** Takes a stripe lock for shard `owner` (its index + 1), waiting at most `waitMs`. */
  #lock(lock: number, owner: number, waitMs: number): boolean {
    const a = this.#i32;
    if (Atomics.compareExchange(a, lock, 0, owner) === 0) return true;
    const until = performance.now() + waitMs;
    for (let n = 1; ; n++) {
      const held = Atomics.load(a, lock);
      if (held === 0) {
        if (Atomics.compareExchange(a, lock, 0, owner) === 0) return true;
      } else if (canSleep && n > SPINS_BEFORE_SLEEP) Atomics.wait(a, lock, held, 0.05);
      else pause();
      if ((n & 255) === 0 && performance.now() > until) return false;
    }
  }

  /** Control plane: 1 when it got the lock, 2 when it took it over from the dead owner, 0 when it gave up. */
  #lockOrSteal(lock: number, dead: number): number {
    const a = this.#i32;
    const start = performance.now();
    for (let n = 1; ; n++) {
      pause();
      const held = Atomics.load(a, lock);
      if (held === 0 && Atomics.compareExchange(a, lock, 0, OWNER_MAIN) === 0) return 1;
      if ((n & 1023) !== 0) continue;
      const waited = performance.now() - start;
      if (held === dead && waited > STEAL_AFTER_MS && Atomics.compareExchange(a, lock, dead, OWNER_MAIN) === dead) return 2;
      if (waited > GIVE_UP_MS) return 0;
    }
  }

  // Backend rows: health and breaker written by the control plane; ACTIVE by every shard.
  backendGet(slot: number, field: number): number {
    return Atomics.load(this.#i32, I32_BACKEND + slot * B_FIELDS + field);
  }

  backendSet(slot: number, field: number, v: number): void {
    Atomics.store(this.#i32, I32_BACKEND + slot * B_FIELDS + field, v);
  }

  backendAdd(slot: number, field: number, n: number): number {
    return Atomics.add(this.#i32, I32_BACKEND + slot * B_FIELDS + field, n);
  }

  /** Compare-and-swap on a backend field; true when `expected` was there and `v` was written. */
  backendCas(slot: number, field: number, expected: number, v: number): boolean {
    return Atomics.compareExchange(this.#i32, I32_BACKEND + slot * B_FIELDS + field, expected, v) === expected;
  }

  /**
   * A connection on `shard` starts (n = 1) or ends (n = -1) on the backend in row `slot`: the
   * backend's count across shards (B.ACTIVE, what least_connections and p2c read) and the shard's
   * own share of it, which {@link backendReleaseShard} gives back when the shard dies.
   */
  backendActiveAdd(shard: number, slot: number, n: number): void {
    Atomics.add(this.#i32, I32_BACKEND + slot * B_FIELDS + B.ACTIVE, n);
    Atomics.add(this.#i32, I32_SHARD_BACKEND + shard * MAX_BACKENDS + slot, n);
  }

  /** The connections `shard` has on the backend in row `slot`. */
  backendShardActive(shard: number, slot: number): number {
    return Atomics.load(this.#i32, I32_SHARD_BACKEND + shard * MAX_BACKENDS + slot);
  }

  /**
   * Takes a dead shard's connections off every backend's count (they died with its thread, which
   * will never count them down). Only for a shard that can no longer run. Returns how many.
   */
  backendReleaseShard(shard: number): number {
    let total = 0;
    const base = I32_SHARD_BACKEND + shard * MAX_BACKENDS;
    for (let slot = 0; slot < MAX_BACKENDS; slot++) {
      if (Atomics.load(this.#i32, base + slot) === 0) continue;
      const n = Atomics.exchange(this.#i32, base + slot, 0);
      Atomics.sub(this.#i32, I32_BACKEND + slot * B_FIELDS + B.ACTIVE, n);
      total += n;
    }
    return total;
  }

  resetBackend(slot: number): void {
    const base = I32_BACKEND + slot * B_FIELDS;
    for (let f = 0; f < B_FIELDS; f++) Atomics.store(this.#i32, base + f, 0);
    Atomics.store(this.#i32, base + B.HEALTHY, 1);
    for (let s = 0; s < MAX_SHARDS; s++) Atomics.store(this.#i32, I32_SHARD_BACKEND + s * MAX_BACKENDS + slot, 0);
  }

  shardSetUp(shard: number, up: boolean): void {
    Atomics.store(this.#i32, I32_SHARD + shard * S_FIELDS + S.UP, up ? 1 : 0);
  }

  /** A shard processed one `hub-deliver` (counted so that the main thread can pace nodes by the shards' backlog). */
  hubDeliverDone(shard: number): void {
    Atomics.add(this.#i32, I32_SHARD + shard * S_FIELDS + S.HUB_DONE, 1);
  }

  hubDeliversDone(shard: number): number {
    return Atomics.load(this.#i32, I32_SHARD + shard * S_FIELDS + S.HUB_DONE);
  }

  shardUp(shard: number): boolean {
    return Atomics.load(this.#i32, I32_SHARD + shard * S_FIELDS + S.UP) === 1;
  }
}

/**
 * Deletes entry `i` of a stripe (lock held) by backward shift: later entries of the probe run
 * move back into the hole, so lookups never need tombstones and nothing grows under churn. Each
 * move writes the value, then the key, then frees the old place: an interrupted move leaves an
 * exact duplicate at worst.
 */
function deleteEntry(a: Int32Array, e0: number, i: number): void {
  Atomics.store(a, e0 + 2 * i, 0);
  for (let j = (i + 1) & IP_ENTRY_MASK; j !== i; j = (j + 1) & IP_ENTRY_MASK) {
    const k = Atomics.load(a, e0 + 2 * j);
    if (k === 0) return;
    const home = (k >>> 8) & IP_ENTRY_MASK;
    // The entry stays when its home lies cyclically in (i, j].
    if (i <= j ? i < home && home <= j : i < home || home <= j) continue;
    Atomics.store(a, e0 + 2 * i + 1, Atomics.load(a, e0 + 2 * j + 1));
    Atomics.store(a, e0 + 2 * i, k);
    Atomics.store(a, e0 + 2 * j, 0);
    i = j;
  }
}

/** Rebuilds a stripe (lock held) without `shard`'s entries and without duplicates; returns the places dropped. */
function rebuildStripe(a: Int32Array, e0: number, shard: number): number {
  const keep: number[] = [];
  let dropped = 0;
  for (let i = 0; i < IP_STRIPE_ENTRIES; i++) {
    const k = Atomics.load(a, e0 + 2 * i);
    const v = Atomics.load(a, e0 + 2 * i + 1);
    Atomics.store(a, e0 + 2 * i, 0);
    Atomics.store(a, e0 + 2 * i + 1, 0);
    if (k === 0) continue;
    let dup = false;
    for (let j = 0; j < keep.length && !dup; j += 2) dup = keep[j] === k && keep[j + 1]! >>> 24 === v >>> 24;
    if (dup) continue;
    if (v >>> 24 === shard) dropped += v & IP_COUNT_MASK;
    else keep.push(k, v);
  }
  for (let j = 0; j < keep.length; j += 2) {
    let i = (keep[j]! >>> 8) & IP_ENTRY_MASK;
    while (Atomics.load(a, e0 + 2 * i) !== 0) i = (i + 1) & IP_ENTRY_MASK;
    Atomics.store(a, e0 + 2 * i + 1, keep[j + 1]!);
    Atomics.store(a, e0 + 2 * i, keep[j]!);
  }
  return dropped;
}

/**
 * Gives out stable table rows by name (main thread). A name keeps its slot across reloads;
 * a released slot is zeroed before it is reused.
 */
export class SlotAllocator {
  readonly #slots = new Map<string, number>();
  /**
   * Rows whose name left the config while something still counts on them (a removed backend's or
   * listener's connections finish after the reload). They go back to the free list only once idle:
   * handing a busy row to a new name would let the old connections' ends count the new one down.
   */
  readonly #retired = new Map<number, string>();
  readonly #free: number[] = [];
  #next = 0;
  readonly #max: number;
  readonly #onReuse: (slot: number) => void;
  readonly #idle: (slot: number) => boolean;

  /**
   * @param onReuse resets a row before it is given to a new name.
   * @param idle whether a retired row has nothing counting on it any more (default: always).
   */
  constructor(max: number, onReuse: (slot: number) => void, idle: (slot: number) => boolean = () => true) {
    this.#max = max;
    this.#onReuse = onReuse;
    this.#idle = idle;
  }

  get(name: string): number {
    let s = this.#slots.get(name);
    if (s !== undefined) return s;
    // A name that comes back while its row is retired gets its row back, counts and all.
    for (const [slot, n] of this.#retired) {
      if (n !== name) continue;
      this.#retired.delete(slot);
      this.#slots.set(name, slot);
      return slot;
    }
    this.#sweep();
    if (this.#free.length > 0) {
      s = this.#free.shift()!;
      this.#onReuse(s);
    } else {
      if (this.#next >= this.#max) throw new RangeError(`state table full: more than ${this.#max} slots (${this.#retired.size} still draining)`);
      s = this.#next++;
    }
    this.#slots.set(name, s);
    return s;
  }

  /** Retires every name not in `keep`; its row is freed once idle. */
  retain(keep: Iterable<string>): void {
    const k = new Set(keep);
    for (const [name, slot] of this.#slots) {
      if (!k.has(name)) {
        this.#slots.delete(name);
        this.#retired.set(slot, name);
      }
    }
    this.#sweep();
  }

  /** Frees the retired rows that became idle. */
  #sweep(): void {
    for (const slot of this.#retired.keys()) {
      if (!this.#idle(slot)) continue;
      this.#retired.delete(slot);
      this.#free.push(slot);
    }
  }

  /** The names in the config and their rows. */
  entries(): [string, number][] {
    return [...this.#slots];
  }

  /** Every row in use: the config's and the retired ones still draining. */
  used(): number[] {
    return [...this.#slots.values(), ...this.#retired.keys()];
  }

  /** How many retired rows are still draining. */
  get retired(): number {
    this.#sweep();
    return this.#retired.size;
  }
}
