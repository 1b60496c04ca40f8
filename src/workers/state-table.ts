/**
 * The shared state table: one `SharedArrayBuffer` that the control plane and every shard map,
 * read and written lock-free with `Atomics` (DESIGN.md section 1). Decisions are made by
 * control-plane actors and published here; shards write only their own counter rows, except the
 * few cells that are shared on purpose (a listener's live connection count, a backend's active
 * connections), which are updated with atomic add/sub.
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
} as const;
const L_FIELDS = 8;
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
export const S = { UP: 0 } as const;
const S_FIELDS = 2;

const I32_LISTENER = 0;
const I32_LISTENER_GLOBAL = I32_LISTENER + MAX_SHARDS * MAX_LISTENERS * L_FIELDS;
const I32_BACKEND = I32_LISTENER_GLOBAL + MAX_LISTENERS * LG_FIELDS;
const I32_SHARD = I32_BACKEND + MAX_BACKENDS * B_FIELDS;
const I32_LEN = I32_SHARD + MAX_SHARDS * S_FIELDS;
const BIG_LEN = MAX_SHARDS * MAX_LISTENERS * LB_FIELDS;

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

  resetBackend(slot: number): void {
    const base = I32_BACKEND + slot * B_FIELDS;
    for (let f = 0; f < B_FIELDS; f++) Atomics.store(this.#i32, base + f, 0);
    Atomics.store(this.#i32, base + B.HEALTHY, 1);
  }

  shardSetUp(shard: number, up: boolean): void {
    Atomics.store(this.#i32, I32_SHARD + shard * S_FIELDS + S.UP, up ? 1 : 0);
  }

  shardUp(shard: number): boolean {
    return Atomics.load(this.#i32, I32_SHARD + shard * S_FIELDS + S.UP) === 1;
  }
}

/**
 * Gives out stable table rows by name (main thread). A name keeps its slot across reloads;
 * a released slot is zeroed before it is reused.
 */
export class SlotAllocator {
  readonly #slots = new Map<string, number>();
  readonly #free: number[] = [];
  #next = 0;
  readonly #max: number;
  readonly #onReuse: (slot: number) => void;

  constructor(max: number, onReuse: (slot: number) => void) {
    this.#max = max;
    this.#onReuse = onReuse;
  }

  get(name: string): number {
    let s = this.#slots.get(name);
    if (s !== undefined) return s;
    if (this.#free.length > 0) {
      s = this.#free.shift()!;
      this.#onReuse(s);
    } else {
      if (this.#next >= this.#max) throw new RangeError(`state table full: more than ${this.#max} slots`);
      s = this.#next++;
    }
    this.#slots.set(name, s);
    return s;
  }

  /** Releases every name not in `keep`. */
  retain(keep: Iterable<string>): void {
    const k = new Set(keep);
    for (const [name, slot] of this.#slots) {
      if (!k.has(name)) {
        this.#slots.delete(name);
        this.#free.push(slot);
      }
    }
  }

  entries(): [string, number][] {
    return [...this.#slots];
  }
}
