/**
 * The memory layout of the shared state table: the field names of each kind of row, the limits,
 * and where each region starts in the two buffers. Every thread computes the same offsets from
 * these constants, so a (shard, listener, field) triple names the same cell everywhere with no
 * handshake. Kept apart from the code that reads the cells so the whole map fits on one screen.
 */

/** Shards (threads) the table has rows for. */
export const MAX_SHARDS = 64;
/** Listener slots. */
export const MAX_LISTENERS = 64;
/** Backend slots (`upstream/address`). */
export const MAX_BACKENDS = 1024;

/**
 * Int32 fields of a (shard, listener) row.
 *
 * @example
 * table.listenerAdd(shard, slot, L.OK, 1);
 */
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
/** Int32 fields per (shard, listener) row (room for more counters). */
export const L_FIELDS = 16;

/**
 * `gatehouse_hub_dropped_total{reason}` label of each hub drop counter.
 *
 * @example
 * for (const [reason, field] of Object.entries(HUB_DROPS)) table.listenerSum(slot, field);
 */
export const HUB_DROPS: Record<string, number> = {
  queue_full: L.HUB_DROP_QUEUE,
  bad_request: L.HUB_DROP_BAD,
  node_unavailable: L.HUB_DROP_UNAVAILABLE,
  oversize: L.HUB_DROP_OVERSIZE,
  rate_limited: L.HUB_DROP_RATE,
  slow_consumer: L.HUB_SLOW_CLOSED,
};

/**
 * The outcome label of each counter field (contract `gatehouse_connections_total{outcome}`).
 *
 * @example
 * table.listenerAdd(shard, slot, OUTCOMES[outcome]!, 1);
 */
export const OUTCOMES: Record<string, number> = {
  ok: L.OK,
  rate_limited: L.RATE_LIMITED,
  over_limit: L.OVER_LIMIT,
  no_backend: L.NO_BACKEND,
  backend_error: L.BACKEND_ERROR,
  timeout: L.TIMEOUT,
  error: L.ERROR,
};
/** An outcome label of `gatehouse_connections_total`. */
export type Outcome = keyof typeof OUTCOMES & string;

/**
 * BigInt64 fields of a (shard, listener) row.
 *
 * @example
 * table.bytesGet(shard, slot, LB.BYTES_IN);
 */
export const LB = { BYTES_IN: 0, BYTES_OUT: 1 } as const;
/** BigInt64 fields per (shard, listener) row. */
export const LB_FIELDS = 2;

/**
 * Int32 fields of a listener-wide row (all shards).
 *
 * @example
 * table.listenerActiveAll(slot); // LG.ACTIVE
 */
export const LG = { ACTIVE: 0 } as const;
/** Int32 fields per listener-wide row (3 spare). */
export const LG_FIELDS = 4;

/**
 * Int32 fields of a backend row. HEALTHY (the probe's verdict) and BREAKER (0 closed, 1 open,
 * 2 half-open) are written by the control plane's actors; PERMIT is the half-open trial permit a
 * shard takes with compare-and-swap; ACTIVE counts connections on every shard; FAILS counts
 * consecutive failed connects seen by any shard (a success resets it). ADMIN is the operator's
 * state from the admin API (0 ready, 1 drain, 2 maintenance): any but 0 takes no new traffic;
 * WEIGHT is a runtime weight set there, stored plus one (0: the config's weight).
 *
 * @example
 * table.backendCas(slot, B.PERMIT, 0, 1); // take the half-open trial
 */
export const B = { HEALTHY: 0, BREAKER: 1, PERMIT: 2, ACTIVE: 3, FAILS: 4, ADMIN: 5, WEIGHT: 6 } as const;
/** B.ADMIN values. */
export const ADMIN = { READY: 0, DRAIN: 1, MAINT: 2 } as const;
/** Int32 fields per backend row (1 spare). */
export const B_FIELDS = 8;

/**
 * Int32 fields of a shard's row: UP (1 while it runs), HUB_DONE (hub-deliver messages it has
 * processed, for node pacing), HEARTBEAT (bumped by the shard's thread on a timer; the main
 * thread's watchdog reads it).
 *
 * @example
 * table.shardUp(shard); // S.UP === 1
 */
export const S = { UP: 0, HUB_DONE: 1, HEARTBEAT: 2 } as const;
/** Int32 fields per shard row. */
export const S_FIELDS = 3;

/**
 * Per-IP places (`maxConnectionsPerIp`), per listener: {@link IP_STRIPES} open-addressing tables
 * of {@link IP_STRIPE_ENTRIES} entries, each guarded by a spinlock. An entry is (key, shard << 24 |
 * count): the places that one shard holds for one client IP, so that a dead shard's places can be
 * found and given back. An IP's count across shards is the sum of its entries.
 */
export const IP_STRIPES = 256;
/** Entries of one per-IP stripe. */
export const IP_STRIPE_ENTRIES = 64;
/** A key's low 8 bits pick its stripe... */
export const IP_STRIPE_MASK = IP_STRIPES - 1;
/** ...and the next 6 its home entry in the stripe. */
export const IP_ENTRY_MASK = IP_STRIPE_ENTRIES - 1;
/** An entry's value is shard << 24 | count: the count's bits. */
export const IP_COUNT_MASK = 0xffffff;
/**
 * Int32 header of a listener's per-IP region: admissions that could not be counted (fail open),
 * releases that had to wait for their stripe lock (queued and given back later), and how many of
 * those are still queued.
 */
export const IP_H = { UNTRACKED: 0, DEFERRED: 1, PENDING: 2 } as const;
/** Int32 cells of the header (1 spare). */
export const IP_HEADER = 4;
/** Offset of the stripe locks in a listener's per-IP region, one Int32 per stripe. */
export const IP_LOCKS = IP_HEADER;
/** Offset of the entries: (key, value) Int32 pairs, stripe after stripe. */
export const IP_ENTRIES = IP_LOCKS + IP_STRIPES;
/** Int32 cells of one listener's per-IP region. */
export const IP_LISTENER_LEN = IP_ENTRIES + IP_STRIPES * IP_STRIPE_ENTRIES * 2;

/** Int32 regions, in order: per (shard, listener) rows... */
export const I32_LISTENER = 0;
/** ...listener-wide rows... */
export const I32_LISTENER_GLOBAL = I32_LISTENER + MAX_SHARDS * MAX_LISTENERS * L_FIELDS;
/** ...backend rows... */
export const I32_BACKEND = I32_LISTENER_GLOBAL + MAX_LISTENERS * LG_FIELDS;
/** ...shard rows... */
export const I32_SHARD = I32_BACKEND + MAX_BACKENDS * B_FIELDS;
/** ...per-IP regions, one per listener... */
export const I32_IP = I32_SHARD + MAX_SHARDS * S_FIELDS;
/** Int32 per (shard, backend): the connections that shard has on that backend (its share of B.ACTIVE). */
export const I32_SHARD_BACKEND = I32_IP + MAX_LISTENERS * IP_LISTENER_LEN;
/** Int32 cells in all. */
export const I32_LEN = I32_SHARD_BACKEND + MAX_SHARDS * MAX_BACKENDS;
/** BigInt64: per (shard, listener) bytes, then one GCRA cell (theoretical arrival time, ns) per listener... */
export const BIG_RATE = MAX_SHARDS * MAX_LISTENERS * LB_FIELDS;

/**
 * ...then the route rate limits (`routes[].rateLimit`, see ./route-limits.ts): one table for every
 * listener, {@link RL_STRIPES} stripes of {@link RL_STRIPE_ENTRIES} entries, each stripe with a
 * lock cell (taken only to claim an entry). An entry is two BigInt64 cells: the key's hash (read
 * and written as two Int32 halves) and its GCRA theoretical arrival time (ns). 64K entries of
 * 16 bytes: 1 MiB, plus 8.5 KiB of header and locks.
 */
export const RL_STRIPES = 1024;
/** Entries of one route-limit stripe: a key's probe window is its whole stripe. */
export const RL_STRIPE_ENTRIES = 64;
/** Routes per listener a route limit can name (`route` is 0..255). */
export const RL_ROUTES = 256;
/** BigInt64 offsets in the route-limit region: the hash seed (written once by `StateTable.create`)... */
export const RL_SEED = 0;
/** ...one lock per stripe (0 free, else the holder's monotonic ns when it took it; 8 header cells before them)... */
export const RL_LOCKS = 8;
/** ...per listener, the admits that failed open (the key's stripe was full of live entries of other keys)... */
export const RL_UNTRACKED = RL_LOCKS + RL_STRIPES;
/** ...then the entries: (hash, TAT) BigInt64 pairs, stripe after stripe (starts on a 64-byte line). */
export const RL_ENTRIES = RL_UNTRACKED + MAX_LISTENERS;
/** BigInt64 cells of the route-limit region. */
export const RL_LEN = RL_ENTRIES + RL_STRIPES * RL_STRIPE_ENTRIES * 2;
/** Start of the route-limit region in the BigInt64 buffer. */
export const BIG_ROUTE = BIG_RATE + MAX_LISTENERS;
/**
 * ...then cluster mode's rate-limit leases (see ./lease.ts and src/cluster/ratelimit.ts): a header
 * with {@link LEASE_MODE}, then one lease of {@link LEASE_FIELDS} cells per listener, then one per
 * route-limit entry (the same index as the entry, so a key's lease follows its entry). 2 MiB,
 * backed by memory only where cluster mode touches it.
 */
export const BIG_LEASE = BIG_ROUTE + RL_LEN;
/** Offset of the lease mode cell in the lease region: 1 while this instance spends leases from Redis, 0 for the local buckets. */
export const LEASE_MODE = 0;
/** Offset of the lease clock cell: the main thread's `leaseClock()` (ms), stored every few ms while leases are on, so shards read the time without a clock call. */
export const LEASE_CLOCK = 1;
/** Offset of the listeners' leases (8 header cells before them). */
export const LEASE_LISTENERS = 8;
/** BigInt64 cells of one lease (see `LEASE` in ./lease.ts). */
export const LEASE_FIELDS = 4;
/** Offset of the route entries' leases. */
export const LEASE_ROUTES = LEASE_LISTENERS + MAX_LISTENERS * LEASE_FIELDS;
/** BigInt64 cells in all. */
export const BIG_LEN = BIG_LEASE + LEASE_ROUTES + RL_STRIPES * RL_STRIPE_ENTRIES * LEASE_FIELDS;
/** BigInt64 index of the lease of the listener at `slot`. */
export const listenerLeaseCell = (slot: number): number => BIG_LEASE + LEASE_LISTENERS + slot * LEASE_FIELDS;
/** BigInt64 index of the lease of route-limit entry `e` (0 .. stripes × entries). */
export const routeLeaseCell = (e: number): number => BIG_LEASE + LEASE_ROUTES + e * LEASE_FIELDS;

/** Index of a (shard, listener) Int32 field. */
export const listenerCell = (shard: number, slot: number, field: number): number => I32_LISTENER + (shard * MAX_LISTENERS + slot) * L_FIELDS + field;
/** Index of a listener-wide Int32 field. */
export const listenerGlobalCell = (slot: number, field: number): number => I32_LISTENER_GLOBAL + slot * LG_FIELDS + field;
/** Index of a backend Int32 field. */
export const backendCell = (slot: number, field: number): number => I32_BACKEND + slot * B_FIELDS + field;
/** Index of a (shard, backend) share of B.ACTIVE. */
export const shardBackendCell = (shard: number, slot: number): number => I32_SHARD_BACKEND + shard * MAX_BACKENDS + slot;
/** Index of a shard Int32 field. */
export const shardCell = (shard: number, field: number): number => I32_SHARD + shard * S_FIELDS + field;
/** Start of a listener's per-IP region. */
export const ipRegion = (slot: number): number => I32_IP + slot * IP_LISTENER_LEN;

/**
 * The two buffers a table is made of; structured-clonable, so they travel to a worker thread in
 * its init message.
 */
export interface StateTableBuffers {
  i32: SharedArrayBuffer;
  big: SharedArrayBuffer;
}
