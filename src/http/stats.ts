/**
 * HTTP request metrics of one shard, counted in the shard's own thread. Nothing crosses threads
 * per request: each connection calls `stats.request(...)` on its shard's one `HttpStats`, and the
 * main thread asks every shard for a `snapshot()` at scrape time and sums them
 * (`mergeHttpStats`). The snapshot is plain data, so it goes through `postMessage` as it is.
 */

/**
 * Upper bounds (seconds) of the `gatehouse_http_request_duration_seconds` buckets, from 0.5 ms
 * to 10 s; `+Inf` is implied.
 */
export const HTTP_DURATION_BUCKETS: readonly number[] = Object.freeze([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]);

const NB = HTTP_DURATION_BUCKETS.length;
/** Bucket counts, one past the last bound (above 10 s), then the sum and the count. */
const SUM = NB + 1;
const COUNT = NB + 2;
const BOUNDS = Float64Array.from(HTTP_DURATION_BUCKETS);
/** Statuses 100..599 are counted in a direct-indexed array; others (600..999 from an upstream) in a Map. */
const CODE_MIN = 100;
const CODE_SPAN = 500;

/** One listener and route: the series of a snapshot, summed over shards by {@link mergeHttpStats}. */
export interface HttpRouteStats {
  listener: string;
  /** The route's name; `''` when no route matched (a 404, a 400 before routing). */
  route: string;
  /** Requests by status code: `[status, count]`, one pair per status seen (the label is the status as a string). */
  codes: [status: number, count: number][];
  /**
   * Requests per duration bucket, not cumulative: `buckets[i]` counts durations in
   * `(HTTP_DURATION_BUCKETS[i-1], HTTP_DURATION_BUCKETS[i]]`, and the last entry (index
   * `HTTP_DURATION_BUCKETS.length`) those above the highest bound.
   */
  buckets: number[];
  /** Sum of the durations, seconds. */
  sum: number;
  count: number;
}

/** What a shard answers to `http-stats`: plain, structured-clonable data. */
export interface HttpStatsSnapshot {
  routes: HttpRouteStats[];
  /** Requests sent to an upstream again after a failed try, per upstream. */
  retries: { upstream: string; count: number }[];
  /** Requests refused (429) by a route's rate limit, per listener and route. */
  rateLimited: { listener: string; route: string; count: number }[];
  /** TLS handshakes per listener (any protocol): done, failed, and of the done ones resumed. */
  tls?: { listener: string; ok: number; error: number; resumed: number }[];
}

interface Entry {
  /** Index `status - 100`; a hole is a status not seen yet. */
  readonly codes: number[];
  /** The indexes of `codes` in use, in the order first seen (a snapshot reads only these). */
  readonly seen: number[];
  /** Statuses outside 100..599, created on the first one. */
  other: Map<number, number> | undefined;
  /** Bucket counts (`NB + 1`), the sum, the count. */
  readonly h: Float64Array;
}

function newEntry(): Entry {
  return { codes: [], seen: [], other: undefined, h: new Float64Array(NB + 3) };
}

/**
 * A shard's HTTP counters: requests by listener, route and status, their durations as a
 * histogram, upstream retries, and requests refused by a route's rate limit. One per shard
 * thread, used by that thread only.
 *
 * Cost of `request()`: about 22 ns per call over the benchmark's empty loop (30 ns with it) on
 * the project's 2-core machine (Node 24, 4 listeners × 51 routes, 5 statuses, durations over
 * the buckets; `npm exec -- node bench/tools/http-stats-bench.ts`), about 1 ms a second at
 * 50k requests a second. No string is built, and nothing is allocated once a series has seen
 * its statuses: two `Map` lookups on the strings the caller already holds, then array increments.
 *
 * @example
 * const stats = new HttpStats();
 * stats.request('web', 'api', 200, 0.0042);
 * stats.retry('api-backends');
 * port.postMessage({ type: 'reply', id, value: stats.snapshot() });
 */
export class HttpStats {
  readonly #listeners = new Map<string, Map<string, Entry>>();
  readonly #retries = new Map<string, number>();
  readonly #limited = new Map<string, Map<string, number>>();

  /**
   * Counts one request: its status (as sent to the client) and its duration in seconds, from
   * the first byte of the request to the last byte of the response. `route` is `''` when no
   * route matched. A negative or non-finite duration counts as 0, and so does a status that is
   * not a non-negative integer.
   *
   * @example
   * stats.request('web', '', 404, 0.00012);
   */
  request(listener: string, route: string, code: number, seconds: number): void {
    let byRoute = this.#listeners.get(listener);
    if (byRoute === undefined) this.#listeners.set(listener, (byRoute = new Map()));
    let e = byRoute.get(route);
    if (e === undefined) byRoute.set(route, (e = newEntry()));
    const i = code - CODE_MIN;
    if (i >= 0 && i < CODE_SPAN && (i | 0) === i) {
      const n = e.codes[i];
      if (n === undefined) {
        e.codes[i] = 1;
        e.seen.push(i);
      } else e.codes[i] = n + 1;
    } else {
      // Rare: a status past 599 from an upstream; a broken value is counted as 0, never left to spoil the snapshot.
      const k = Number.isSafeInteger(code) && code >= 0 ? code : 0;
      (e.other ??= new Map()).set(k, (e.other.get(k) ?? 0) + 1);
    }
    const h = e.h;
    const s = seconds >= 0 && seconds < Infinity ? seconds : 0;
    let b = 0;
    while (b < NB && s > BOUNDS[b]!) b++;
    h[b]!++;
    h[SUM]! += s;
    h[COUNT]!++;
  }

  /**
   * Counts one request sent again to `upstream`.
   *
   * @example
   * stats.retry('api');
   */
  retry(upstream: string): void {
    this.#retries.set(upstream, (this.#retries.get(upstream) ?? 0) + 1);
  }

  /**
   * Counts one request refused by the rate limit of `route` (its 429 is counted by
   * {@link request} as well).
   *
   * @example
   * stats.rateLimited('web', 'api');
   */
  rateLimited(listener: string, route: string): void {
    let byRoute = this.#limited.get(listener);
    if (byRoute === undefined) this.#limited.set(listener, (byRoute = new Map()));
    byRoute.set(route, (byRoute.get(route) ?? 0) + 1);
  }

  /**
   * Everything counted since this object was made, as plain data (a copy: later requests do
   * not change it).
   *
   * @example
   * const snap = stats.snapshot(); // { routes: [{ listener: 'web', route: 'api', codes: [[200, 1]], ... }], retries: [], rateLimited: [] }
   */
  snapshot(): HttpStatsSnapshot {
    const routes: HttpRouteStats[] = [];
    for (const [listener, byRoute] of this.#listeners) {
      for (const [route, e] of byRoute) {
        const codes: [number, number][] = [];
        for (const i of e.seen) codes.push([i + CODE_MIN, e.codes[i]!]);
        if (e.other) for (const [code, n] of e.other) codes.push([code, n]);
        const buckets = new Array<number>(NB + 1);
        for (let b = 0; b <= NB; b++) buckets[b] = e.h[b]!;
        routes.push({ listener, route, codes, buckets, sum: e.h[SUM]!, count: e.h[COUNT]! });
      }
    }
    const rateLimited: HttpStatsSnapshot['rateLimited'] = [];
    for (const [listener, byRoute] of this.#limited) for (const [route, count] of byRoute) rateLimited.push({ listener, route, count });
    return { routes, retries: [...this.#retries].map(([upstream, count]) => ({ upstream, count })), rateLimited };
  }
}

/**
 * An empty snapshot: what a shard that served nothing answers, and the start of a sum.
 *
 * @example
 * const total = emptyHttpStats();
 * for (const s of snapshots) mergeHttpStats(total, s);
 */
export function emptyHttpStats(): HttpStatsSnapshot {
  return { routes: [], retries: [], rateLimited: [] };
}

/**
 * Adds `from` into `into` (series by listener and route, codes, buckets, sum and count, retries
 * by upstream, rate-limit refusals by listener and route). `from` is not changed, and nothing of it is shared with `into`.
 *
 * @example
 * const total = emptyHttpStats();
 * mergeHttpStats(total, shard0);
 * mergeHttpStats(total, shard1);
 */
export function mergeHttpStats(into: HttpStatsSnapshot, from: HttpStatsSnapshot): void {
  const byKey = new Map<string, Map<string, HttpRouteStats>>();
  for (const r of into.routes) {
    let m = byKey.get(r.listener);
    if (!m) byKey.set(r.listener, (m = new Map()));
    m.set(r.route, r);
  }
  for (const r of from.routes) {
    let m = byKey.get(r.listener);
    if (!m) byKey.set(r.listener, (m = new Map()));
    let t = m.get(r.route);
    if (!t) {
      t = { listener: r.listener, route: r.route, codes: [], buckets: new Array<number>(NB + 1).fill(0), sum: 0, count: 0 };
      m.set(r.route, t);
      into.routes.push(t);
    }
    // A few statuses per series: a scan beats any keyed lookup (numeric-string keys make V8's slow elements).
    for (const [code, n] of r.codes) {
      const c = t.codes.find((x) => x[0] === code);
      if (c) c[1] += n;
      else t.codes.push([code, n]);
    }
    for (let i = 0; i <= NB; i++) t.buckets[i] = (t.buckets[i] ?? 0) + (r.buckets[i] ?? 0);
    t.sum += r.sum;
    t.count += r.count;
  }
  for (const r of from.retries) {
    const t = into.retries.find((x) => x.upstream === r.upstream);
    if (t) t.count += r.count;
    else into.retries.push({ upstream: r.upstream, count: r.count });
  }
  for (const r of from.rateLimited) {
    const t = into.rateLimited.find((x) => x.listener === r.listener && x.route === r.route);
    if (t) t.count += r.count;
    else into.rateLimited.push({ listener: r.listener, route: r.route, count: r.count });
  }
  for (const r of from.tls ?? []) {
    const list = (into.tls ??= []);
    const t = list.find((x) => x.listener === r.listener);
    if (t) {
      t.ok += r.ok;
      t.error += r.error;
      t.resumed += r.resumed;
    } else list.push({ listener: r.listener, ok: r.ok, error: r.error, resumed: r.resumed });
  }
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

/**
 * Whether `v` is a well-formed {@link HttpStatsSnapshot} (a shard's reply is checked before it
 * is summed: anything else counts as no data).
 *
 * @example
 * if (isHttpStatsSnapshot(reply)) mergeHttpStats(total, reply);
 */
export function isHttpStatsSnapshot(v: unknown): v is HttpStatsSnapshot {
  if (typeof v !== 'object' || v === null) return false;
  const { routes, retries, rateLimited, tls } = v as Partial<HttpStatsSnapshot>;
  if (!Array.isArray(routes) || !Array.isArray(retries) || !Array.isArray(rateLimited)) return false;
  if (tls !== undefined) {
    if (!Array.isArray(tls)) return false;
    for (const t of tls as unknown[]) {
      const x = t as { listener?: unknown; ok?: unknown; error?: unknown; resumed?: unknown } | null;
      if (typeof x !== 'object' || x === null || typeof x.listener !== 'string' || !isCount(x.ok) || !isCount(x.error) || !isCount(x.resumed)) return false;
    }
  }
  for (const r of routes as unknown[]) {
    if (typeof r !== 'object' || r === null) return false;
    const { listener, route, codes, buckets, sum, count } = r as Partial<HttpRouteStats>;
    if (typeof listener !== 'string' || typeof route !== 'string' || !isCount(sum) || !isCount(count)) return false;
    if (!Array.isArray(buckets) || buckets.length !== NB + 1 || !buckets.every(isCount)) return false;
    if (!Array.isArray(codes)) return false;
    for (const c of codes as unknown[]) if (!Array.isArray(c) || c.length !== 2 || !Number.isSafeInteger(c[0]) || !isCount(c[1])) return false;
  }
  for (const r of retries as unknown[]) {
    if (typeof r !== 'object' || r === null) return false;
    const { upstream, count } = r as Partial<HttpStatsSnapshot['retries'][number]>;
    if (typeof upstream !== 'string' || !isCount(count)) return false;
  }
  for (const r of rateLimited as unknown[]) {
    if (typeof r !== 'object' || r === null) return false;
    const { listener, route, count } = r as Partial<HttpStatsSnapshot['rateLimited'][number]>;
    if (typeof listener !== 'string' || typeof route !== 'string' || !isCount(count)) return false;
  }
  return true;
}
