/**
 * The shared state table: two `SharedArrayBuffer`s that the control plane and every shard map,
 * read and written with `Atomics`. Decisions are made by control-plane actors and published
 * here; shards write only their own counter rows, except the few cells that are shared on purpose
 * (a listener's live connection count, a backend's active connections), which are updated with
 * atomic add/sub, a listener's rate-limit cell (compare-and-swap), the route rate limits' keyed
 * GCRA cells (compare-and-swap; a stripe lock only to claim an entry for a new key), and its
 * per-IP places, kept under (striped, short-held) spinlocks.
 *
 * This file is the facade every caller imports. The parts live in ./state/: the memory layout
 * (`layout.ts`), the rate limit (`gcra.ts`), the route rate limits (`route-limits.ts`), the per-IP
 * places (`per-ip.ts`, `stripe.ts`) and the slot allocator (`slots.ts`).
 *
 * @example
 * const table = StateTable.create();
 * table.listenerAdd(0, slot, L.ACTIVE, 1);        // on shard 0
 * table.listenerSum(slot, L.ACTIVE);             // main thread: summed over shards
 */
import {
  B,
  BIG_LEN,
  BIG_LEASE,
  BIG_RATE,
  B_FIELDS,
  LEASE_CLOCK,
  LEASE_MODE,
  I32_LEN,
  IP_H,
  L,
  IP_LISTENER_LEN,
  LB,
  LB_FIELDS,
  LG,
  LG_FIELDS,
  L_FIELDS,
  MAX_BACKENDS,
  MAX_LISTENERS,
  MAX_SHARDS,
  S,
  backendCell,
  ipRegion,
  listenerCell,
  listenerLeaseCell,
  routeLeaseCell,
  listenerGlobalCell,
  shardBackendCell,
  shardCell,
  type StateTableBuffers,
} from './state/layout.ts';
import type { Logger } from 'pino';
import { gcraAdmit } from './state/gcra.ts';
import { IpPlaces, type IpEntry } from './state/per-ip.ts';
import { RouteLimits } from './state/route-limits.ts';
import { leaseAvailable, leaseCancel, leaseClock, leaseGrant, leaseReset, leaseTake, leaseWaitMs } from './state/lease.ts';

export { ADMIN, B, HUB_DROPS, IP_STRIPES, IP_STRIPE_ENTRIES, L, LB, LG, MAX_BACKENDS, MAX_LISTENERS, MAX_SHARDS, OUTCOMES, S, type Outcome, type StateTableBuffers } from './state/layout.ts';
export { IP, ipKey, type IpEntry } from './state/per-ip.ts';
export { RouteLimitError } from './state/route-limits.ts';
export { ADMITTED, ASK } from './state/lease.ts';
export { SlotAllocator } from './state/slots.ts';

/**
 * A count cell that is not zero: `active` connections of `shard` (or of every shard, `'all'`, for
 * the listener-wide or backend-wide cell) on the listener or backend in row `slot`.
 */
export interface ActiveCell {
  slot: number;
  shard: number | 'all';
  active: number;
}

/**
 * Every count that should be back to zero once nothing is open: what a test asserts after it
 * closed its connections, and what to look at when a limit seems to hold places nobody has.
 *
 * @example
 * expect(table.nonZero()).toEqual({ listeners: [], perIp: [], backends: [] });
 */
export interface NonZeroCells {
  /** Per (shard, listener) `L.ACTIVE`, and the listener-wide `ACTIVE` (`shard: 'all'`). */
  listeners: ActiveCell[];
  /** Per-IP entries still holding places (queued releases included until they are done). */
  perIp: IpEntry[];
  /** Per (shard, backend) shares of `B.ACTIVE`, and `B.ACTIVE` itself (`shard: 'all'`). */
  backends: ActiveCell[];
}

/**
 * One thread's view of the shared state table. Create it once in the main thread, send
 * {@link StateTable.buffers} to each shard, and {@link StateTable.attach} them there.
 *
 * @example
 * const table = StateTable.create();
 * const inShard = StateTable.attach(table.buffers);
 */
export class StateTable {
  readonly buffers: StateTableBuffers;
  readonly #i32: Int32Array;
  readonly #big: BigInt64Array;
  /** The BigInt64 buffer as Int32: the leases' cells. */
  readonly #bigI32: Int32Array;
  readonly #ip: IpPlaces;
  readonly #routes: RouteLimits;

  private constructor(buffers: StateTableBuffers) {
    this.buffers = buffers;
    this.#i32 = new Int32Array(buffers.i32);
    this.#big = new BigInt64Array(buffers.big);
    this.#bigI32 = new Int32Array(buffers.big);
    this.#ip = new IpPlaces(this.#i32);
    this.#routes = new RouteLimits(this.#big);
  }

  /** A new, zeroed table (main thread). Backends start healthy with a closed breaker; route limits get their hash seed. */
  static create(): StateTable {
    const big = new SharedArrayBuffer(BIG_LEN * 8);
    RouteLimits.seed(new BigInt64Array(big));
    const t = new StateTable({ i32: new SharedArrayBuffer(I32_LEN * 4), big });
    for (let b = 0; b < MAX_BACKENDS; b++) t.#i32[backendCell(b, B.HEALTHY)] = 1;
    return t;
  }

  /** Maps a table whose buffers came from another thread. */
  static attach(buffers: StateTableBuffers): StateTable {
    return new StateTable(buffers);
  }

  /**
   * Where this thread's view logs what the table does on its own (a per-IP release queued behind
   * a busy stripe lock). Returns the table.
   *
   * @example
   * const table = StateTable.attach(init.buffers).logTo(log);
   */
  logTo(log: Logger): this {
    this.#ip.log = log;
    return this;
  }

  // Per (shard, listener) rows: written by that shard only.
  listenerAdd(shard: number, slot: number, field: number, n: number): void {
    Atomics.add(this.#i32, listenerCell(shard, slot, field), n);
  }

  listenerGet(shard: number, slot: number, field: number): number {
    return Atomics.load(this.#i32, listenerCell(shard, slot, field));
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

  /** Zeroes a listener's rows, per-IP places and route-limit entries (its slot is being reused by another listener). */
  resetListener(slot: number): void {
    for (let s = 0; s < MAX_SHARDS; s++) {
      const base = listenerCell(s, slot, 0);
      for (let f = 0; f < L_FIELDS; f++) Atomics.store(this.#i32, base + f, 0);
      const bb = (s * MAX_LISTENERS + slot) * LB_FIELDS;
      for (let f = 0; f < LB_FIELDS; f++) Atomics.store(this.#big, bb + f, 0n);
    }
    for (let f = 0; f < LG_FIELDS; f++) Atomics.store(this.#i32, listenerGlobalCell(slot, f), 0);
    Atomics.store(this.#big, BIG_RATE + slot, 0n);
    leaseReset(this.#bigI32, listenerLeaseCell(slot));
    // Only non-zero cells are written: pages of the region no listener ever used stay unmapped.
    const ip = ipRegion(slot);
    for (let i = ip; i < ip + IP_LISTENER_LEN; i++) if (Atomics.load(this.#i32, i) !== 0) Atomics.store(this.#i32, i, 0);
    this.#routes.reset(slot);
  }

  /**
   * Takes one place in a listener-wide limit, exactly across shards: the add is atomic, and a
   * taker that overshoots gives its place back. Returns false when the listener is full.
   */
  listenerAcquire(slot: number, max: number): boolean {
    const i = listenerGlobalCell(slot, LG.ACTIVE);
    if (Atomics.add(this.#i32, i, 1) >= max) {
      Atomics.sub(this.#i32, i, 1);
      return false;
    }
    return true;
  }

  /** Gives back `n` places (1 by default) in a listener-wide limit. */
  listenerRelease(slot: number, n = 1): void {
    Atomics.sub(this.#i32, listenerGlobalCell(slot, LG.ACTIVE), n);
  }

  listenerActiveAll(slot: number): number {
    return Atomics.load(this.#i32, listenerGlobalCell(slot, LG.ACTIVE));
  }

  /**
   * The listener's new-connection rate limit (GCRA, see ./state/gcra.ts), exact across shards.
   * `intervalNs` is 1e9 / perSecond and `burstNs` is burst × intervalNs.
   */
  rateAdmit(slot: number, intervalNs: bigint, burstNs: bigint): boolean {
    return gcraAdmit(this.#big, BIG_RATE + slot, intervalNs, burstNs);
  }

  /**
   * A route's rate limit (`routes[].rateLimit`, see ./state/route-limits.ts): admits one request of
   * client `key` (IP, header value or JWT claim) on route `route` (its index in the listener's
   * `routes`, 0..255), one GCRA bucket per key shared exactly by every shard. `intervalNs` and
   * `burstNs` as for {@link rateAdmit}. Returns 0 when admitted, else the ms until this key would be
   * admitted again (> 0, for `Retry-After`). A key whose stripe is full of live keys is admitted and
   * counted ({@link routeLimitUntracked}). Throws `RouteLimitError` (`GH_ERR_ROUTE_LIMIT`) for
   * arguments outside the table.
   *
   * @example
   * const waitMs = table.routeAdmit(slot, route.index, clientIp, limit.intervalNs, limit.burstNs);
   * if (waitMs > 0) respond(429, { 'retry-after': String(Math.ceil(waitMs / 1000)) });
   */
  routeAdmit(listenerSlot: number, route: number, key: string, intervalNs: bigint, burstNs: bigint): number {
    return this.#routes.admit(listenerSlot, route, key, intervalNs, burstNs);
  }

  /**
   * Live route-limit entries of the listener (buckets not yet full again), all routes: a scan
   * without locks, for views and tests.
   *
   * @example
   * expect(table.routeLimitEntries(slot)).toBe(1);
   */
  routeLimitEntries(listenerSlot: number): number {
    return this.#routes.entries(listenerSlot);
  }

  /**
   * Route-limit admits of the listener that failed open (the key's stripe was full of live
   * entries of other keys, or its lock was not had in time), since the slot was last reset.
   *
   * @example
   * table.routeLimitUntracked(slot); // 0 unless the table is crowded
   */
  routeLimitUntracked(listenerSlot: number): number {
    return this.#routes.untracked(listenerSlot);
  }

  /**
   * The entry the last {@link routeAdmit} of this thread decided on (-1: it failed open, no entry).
   *
   * @example
   * if (table.routeAdmit(slot, r, key, t, b) === 0) table.leaseTake(table.routeLease(table.routeLastEntry()), lease);
   */
  routeLastEntry(): number {
    return this.#routes.lastEntry();
  }

  /** The key route-limit entry `e` holds now (an opaque string): a lease answer applies only while it is unchanged. */
  routeEntryKey(e: number): string {
    return this.#routes.entryKey(e);
  }

  // Cluster mode's rate-limit leases (./state/lease.ts): cells named by listenerLease / routeLease.

  /** True while this instance spends leases of buckets shared through Redis (cluster mode, Redis up). */
  leaseMode(): boolean {
    return Atomics.load(this.#bigI32, 2 * (BIG_LEASE + LEASE_MODE)) === 1;
  }

  /** Main thread: leases on (Redis up) or off (every rate limit on its local bucket). */
  setLeaseMode(on: boolean): void {
    Atomics.store(this.#bigI32, 2 * (BIG_LEASE + LEASE_MODE), on ? 1 : 0);
  }

  /**
   * Main thread, every few ms while leases are on: stores the lease clock (`leaseClock()`, ms) in
   * the table. Shards read that instead of a clock: a decision then costs no clock call, and
   * every thread uses one time.
   */
  tickLeaseClock(): void {
    Atomics.store(this.#bigI32, 2 * (BIG_LEASE + LEASE_CLOCK), leaseClock());
  }

  /** The lease clock as last ticked (ms, wrapping; see {@link tickLeaseClock}). */
  leaseNow(): number {
    return Atomics.load(this.#bigI32, 2 * (BIG_LEASE + LEASE_CLOCK));
  }

  /** The lease cell of the listener at `slot`. */
  listenerLease(slot: number): number {
    return listenerLeaseCell(slot);
  }

  /** The lease cell of route-limit entry `e` (see {@link routeLastEntry}). */
  routeLease(e: number): number {
    return routeLeaseCell(e);
  }

  /** Spends one token of the lease at `cell`: `ADMITTED`, with `ASK` when the caller must ask the main thread for more. */
  leaseTake(cell: number, lease: number): number {
    return leaseTake(this.#bigI32, cell, lease, this.leaseNow());
  }

  /** Main thread: Redis granted `granted` tokens, expiring in `ttlMs`; `dryMs` > 0: none left for that long (see ./state/lease.ts `leaseGrant`). */
  leaseGrant(cell: number, granted: number, dryMs: number, ttlMs: number): void {
    leaseGrant(this.#bigI32, cell, granted, dryMs, ttlMs, this.leaseNow());
  }

  /** Main thread: the ask for `cell` will not be answered. */
  leaseCancel(cell: number): void {
    leaseCancel(this.#bigI32, cell);
  }

  /** Usable tokens of the lease at `cell` now (negative: credit taken). */
  leaseAvailable(cell: number): number {
    return leaseAvailable(this.#bigI32, cell, this.leaseNow());
  }

  /** Ms until a request refused by the lease at `cell` could pass (for `Retry-After`). */
  leaseWaitMs(cell: number, intervalNs: bigint): number {
    return leaseWaitMs(this.#bigI32, cell, intervalNs, this.leaseNow());
  }

  /**
   * Takes a place for client `key` ({@link ipKey}) on `shard` when the listener's places for that
   * key, summed over shards, are under `max`. Answers {@link IP}: `REJECTED`, `ADMITTED` (give it
   * back with {@link ipRelease}), or `UNTRACKED`: admitted without a count, because the key's
   * stripe is full or its lock could not be had in time. Failing open keeps a full table from
   * refusing every new client of a busy listener; it is counted (`ipUntracked`).
   */
  ipAcquire(slot: number, shard: number, key: number, max: number): number {
    return this.#ip.acquire(slot, shard, key, max);
  }

  /** Gives back a place taken by {@link ipAcquire} (answered `ADMITTED`). A free entry is deleted by backward shift. */
  ipRelease(slot: number, shard: number, key: number): void {
    this.#ip.release(slot, shard, key);
  }

  /**
   * Control plane, when `shard` went down: gives back every per-IP place it held in the
   * listener's table, and returns how many. A stripe lock still held by the dead shard is taken
   * over (its thread was killed inside the critical section), and that stripe is rebuilt from its
   * entries: a half-done move leaves at most an exact duplicate, which the rebuild drops.
   */
  ipReleaseShard(slot: number, shard: number): number {
    return this.#ip.releaseShard(slot, shard);
  }

  /** Places held for `key` in the listener, over all shards (a look without the lock: for tests and views). */
  ipCount(slot: number, key: number): number {
    return this.#ip.count(slot, key);
  }

  /** Used per-IP entries of the listener, all stripes (0 once every place is given back). */
  ipEntries(slot: number): number {
    return this.#ip.entries(slot);
  }

  /** Connections admitted without a per-IP count (a full stripe, or a lock not had in time). */
  ipUntracked(slot: number): number {
    return this.#ip.header(slot, IP_H.UNTRACKED);
  }

  /**
   * Per-IP releases of the listener (and dead shards' stripes) that had to wait for a busy stripe
   * lock and were queued, since the slot was last reset; `pending` of them are still queued.
   */
  ipDeferred(slot: number): { deferred: number; pending: number } {
    return { deferred: this.#ip.header(slot, IP_H.DEFERRED), pending: this.#ip.header(slot, IP_H.PENDING) };
  }

  /**
   * Every non-zero connection count: listener `ACTIVE` cells (per shard and listener-wide),
   * per-IP entries and backend `ACTIVE` cells (per shard and backend-wide). Reads without locks,
   * for tests and views; all three lists are empty once every connection is closed.
   */
  nonZero(): NonZeroCells {
    const out: NonZeroCells = { listeners: [], perIp: [], backends: [] };
    const a = this.#i32;
    for (let slot = 0; slot < MAX_LISTENERS; slot++) {
      for (let s = 0; s < MAX_SHARDS; s++) {
        const n = Atomics.load(a, listenerCell(s, slot, L.ACTIVE));
        if (n !== 0) out.listeners.push({ slot, shard: s, active: n });
      }
      const all = Atomics.load(a, listenerGlobalCell(slot, LG.ACTIVE));
      if (all !== 0) out.listeners.push({ slot, shard: 'all', active: all });
      out.perIp.push(...this.#ip.list(slot));
    }
    for (let slot = 0; slot < MAX_BACKENDS; slot++) {
      for (let s = 0; s < MAX_SHARDS; s++) {
        const n = Atomics.load(a, shardBackendCell(s, slot));
        if (n !== 0) out.backends.push({ slot, shard: s, active: n });
      }
      const all = Atomics.load(a, backendCell(slot, B.ACTIVE));
      if (all !== 0) out.backends.push({ slot, shard: 'all', active: all });
    }
    return out;
  }

  // Backend rows: health and breaker written by the control plane; ACTIVE by every shard.
  backendGet(slot: number, field: number): number {
    return Atomics.load(this.#i32, backendCell(slot, field));
  }

  backendSet(slot: number, field: number, v: number): void {
    Atomics.store(this.#i32, backendCell(slot, field), v);
  }

  backendAdd(slot: number, field: number, n: number): number {
    return Atomics.add(this.#i32, backendCell(slot, field), n);
  }

  /** Compare-and-swap on a backend field; true when `expected` was there and `v` was written. */
  backendCas(slot: number, field: number, expected: number, v: number): boolean {
    return Atomics.compareExchange(this.#i32, backendCell(slot, field), expected, v) === expected;
  }

  /**
   * A connection on `shard` starts (n = 1) or ends (n = -1) on the backend in row `slot`: the
   * backend's count across shards (B.ACTIVE, what least_connections and p2c read) and the shard's
   * own share of it, which {@link backendReleaseShard} gives back when the shard dies.
   */
  backendActiveAdd(shard: number, slot: number, n: number): void {
    Atomics.add(this.#i32, backendCell(slot, B.ACTIVE), n);
    Atomics.add(this.#i32, shardBackendCell(shard, slot), n);
  }

  /** The connections `shard` has on the backend in row `slot`. */
  backendShardActive(shard: number, slot: number): number {
    return Atomics.load(this.#i32, shardBackendCell(shard, slot));
  }

  /**
   * Takes a dead shard's connections off every backend's count (they died with its thread, which
   * will never count them down). Only for a shard that can no longer run. Returns how many.
   */
  backendReleaseShard(shard: number): number {
    let total = 0;
    for (let slot = 0; slot < MAX_BACKENDS; slot++) {
      const i = shardBackendCell(shard, slot);
      if (Atomics.load(this.#i32, i) === 0) continue;
      const n = Atomics.exchange(this.#i32, i, 0);
      Atomics.sub(this.#i32, backendCell(slot, B.ACTIVE), n);
      total += n;
    }
    return total;
  }

  resetBackend(slot: number): void {
    const base = backendCell(slot, 0);
    for (let f = 0; f < B_FIELDS; f++) Atomics.store(this.#i32, base + f, 0);
    Atomics.store(this.#i32, base + B.HEALTHY, 1);
    for (let s = 0; s < MAX_SHARDS; s++) Atomics.store(this.#i32, shardBackendCell(s, slot), 0);
  }

  shardSetUp(shard: number, up: boolean): void {
    Atomics.store(this.#i32, shardCell(shard, S.UP), up ? 1 : 0);
  }

  /** A shard processed one `hub-deliver` (counted so that the main thread can pace nodes by the shards' backlog). */
  hubDeliverDone(shard: number): void {
    Atomics.add(this.#i32, shardCell(shard, S.HUB_DONE), 1);
  }

  hubDeliversDone(shard: number): number {
    return Atomics.load(this.#i32, shardCell(shard, S.HUB_DONE));
  }

  shardUp(shard: number): boolean {
    return Atomics.load(this.#i32, shardCell(shard, S.UP)) === 1;
  }

  /** A shard's thread is alive: bumps its heartbeat (on a timer; no message crosses threads). */
  shardBeat(shard: number): void {
    Atomics.add(this.#i32, shardCell(shard, S.HEARTBEAT), 1);
  }

  /** The shard's heartbeat count: the watchdog only compares it with the last one it read. */
  shardBeats(shard: number): number {
    return Atomics.load(this.#i32, shardCell(shard, S.HEARTBEAT));
  }
}
