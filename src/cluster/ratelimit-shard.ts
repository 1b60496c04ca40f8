/**
 * Cluster mode's rate limits, shard side: a listener's `rateLimit` and a route's per-key
 * `rateLimit` decided in the shard thread from a lease of tokens that the main thread took from a
 * bucket shared through Redis (see src/cluster/ratelimit.ts and docs/cluster.md). Nothing here
 * waits: a decision is one compare-and-swap on the state table, and a bucket running low posts
 * one ask to the main thread, batched with the others of the same event-loop turn.
 *
 * While the table's lease mode is off (no `cluster`, or Redis away), every limit is decided on
 * its local bucket exactly as without cluster mode.
 */
import { createHash } from 'node:crypto';
import { ADMITTED, ASK, type StateTable } from '../workers/state-table.ts';

/** One bucket running low: what the main thread needs to ask Redis for it and write the answer back. */
export interface RateAsk {
  /** The lease's cell in the state table's BigInt64 buffer. */
  cell: number;
  /** The bucket's name in Redis, under `keyPrefix` + `rl:`. */
  bucket: string;
  /** 1e9 / perSecond. */
  intervalNs: number;
  /** Tokens of the bucket's burst. */
  burst: number;
  /** Tokens per lease ({@link leaseSize}). */
  lease: number;
  /** Route limits: the entry (and the key it held) the lease belongs to; an answer for a key no longer there is dropped. */
  entry?: { index: number; key: string };
}

/** The share of a second's rate leased at once. */
export const LEASE_SHARE = 0.05;

/**
 * Tokens per lease: 5% of `perSecond`, at least 1 and at most `burst`. It bounds how far the
 * instances together can go past the limit (at most 2 × lease per instance, see docs/cluster.md)
 * and how often each asks Redis (about 20 times a second per bucket at full rate).
 *
 * @example
 * leaseSize(50_000_000n, 20); // 20 per second: 1
 */
export function leaseSize(intervalNs: bigint, burst: number): number {
  const perSecond = 1e9 / Number(intervalNs);
  return Math.max(1, Math.min(burst, Math.ceil(perSecond * LEASE_SHARE)));
}

/** A limit's GCRA parameters and its lease, computed once per config (not per decision). */
export interface RateParams {
  intervalNs: bigint;
  burstNs: bigint;
  /** Tokens of the burst. */
  burst: number;
  /** Tokens per lease ({@link leaseSize}). */
  lease: number;
}

/**
 * The {@link RateParams} of a limit given as GCRA parameters (ns).
 *
 * @example
 * const p = rateParams(50_000_000n, 1_000_000_000n); // 20 per second, burst 20: lease 1
 */
export function rateParams(intervalNs: bigint, burstNs: bigint): RateParams {
  const burst = Number(burstNs / intervalNs);
  return { intervalNs, burstNs, burst, lease: leaseSize(intervalNs, burst) };
}

/** Route limits' parameters, by the compiled limit (a route's limit object lives as long as its config snapshot). */
const routeParams = new WeakMap<object, RateParams>();

/** Bucket names past this length are hashed (a header value can be long). */
const MAX_NAME = 200;

let post: ((asks: RateAsk[]) => void) | undefined;
let pending: RateAsk[] = [];
let scheduled = false;

/**
 * Where this thread's asks go (the shard's port, as one `rl-ask` message per event-loop turn);
 * undefined drops them (the shard ended). One shard runs per thread.
 *
 * @example
 * setRateAsks((asks) => port.postMessage({ type: 'rl-ask', asks }));
 */
export function setRateAsks(fn: ((asks: RateAsk[]) => void) | undefined): void {
  post = fn;
  pending = [];
}

function ask(a: RateAsk): void {
  pending.push(a);
  if (scheduled) return;
  scheduled = true;
  setImmediate(flush);
}

function flush(): void {
  scheduled = false;
  const asks = pending;
  pending = [];
  if (asks.length > 0) post?.(asks);
}

function bucketName(name: string): string {
  return name.length <= MAX_NAME ? name : `#${createHash('sha256').update(name).digest('base64url')}`;
}

/**
 * A listener's new-connection rate limit: from its lease while the table is in lease mode, else
 * from its local GCRA cell. True when the connection is admitted.
 *
 * @example
 * if (!listenerRateAdmit(table, slot, 'web', rateParams(t, t * 20n))) refuse();
 */
export function listenerRateAdmit(table: StateTable, slot: number, listener: string, p: RateParams): boolean {
  if (!table.leaseMode()) return table.rateAdmit(slot, p.intervalNs, p.burstNs);
  const cell = table.listenerLease(slot);
  const r = table.leaseTake(cell, p.lease);
  if (r & ASK) ask({ cell, bucket: bucketName(`l:${listener}`), intervalNs: Number(p.intervalNs), burst: p.burst, lease: p.lease });
  return (r & ADMITTED) !== 0;
}

/**
 * A route's per-key rate limit. The key's local bucket decides first (it also finds the key's
 * entry, whose lease is then spent): in lease mode a request passes both, so one instance never
 * goes past the whole limit on its own, and the cluster's lease decides the rest. Returns 0 when
 * admitted, else the ms until the key could pass (for `Retry-After`).
 *
 * @example
 * const waitMs = routeRateAdmit(table, slot, 'web', route.index, route.name, key, route.limit);
 */
export function routeRateAdmit(table: StateTable, slot: number, listener: string, route: number, routeName: string, key: string, limit: { intervalNs: bigint; burstNs: bigint }): number {
  const local = table.routeAdmit(slot, route, key, limit.intervalNs, limit.burstNs);
  if (local > 0 || !table.leaseMode()) return local;
  const e = table.routeLastEntry();
  // Failed open locally (a crowded stripe): no entry to hold a lease either.
  if (e < 0) return 0;
  let p = routeParams.get(limit);
  if (p === undefined) routeParams.set(limit, (p = rateParams(limit.intervalNs, limit.burstNs)));
  const cell = table.routeLease(e);
  const r = table.leaseTake(cell, p.lease);
  if (r & ASK) ask({ cell, bucket: bucketName(`r:${listener}:${routeName}:${key}`), intervalNs: Number(p.intervalNs), burst: p.burst, lease: p.lease, entry: { index: e, key: table.routeEntryKey(e) } });
  return r & ADMITTED ? 0 : table.leaseWaitMs(cell, p.intervalNs);
}
