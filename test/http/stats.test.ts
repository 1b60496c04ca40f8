import { MessageChannel } from 'node:worker_threads';
import { once } from 'node:events';
import { describe, expect, test } from 'vitest';
import { HTTP_DURATION_BUCKETS, HttpStats, emptyHttpStats, isHttpStatsSnapshot, mergeHttpStats, type HttpRouteStats, type HttpStatsSnapshot } from '../../src/http/stats.ts';

const NB = HTTP_DURATION_BUCKETS.length;

function series(s: HttpStatsSnapshot, listener: string, route: string): HttpRouteStats {
  const r = s.routes.find((x) => x.listener === listener && x.route === route);
  if (!r) throw new Error(`no series ${listener}/${route} in ${JSON.stringify(s)}`);
  return r;
}

const codes = (r: HttpRouteStats): Record<string, number> => Object.fromEntries(r.codes.map(([c, n]) => [String(c), n]));

/** Bucket index -> count, only the non-empty ones. */
function filled(r: HttpRouteStats): Record<number, number> {
  return Object.fromEntries(r.buckets.flatMap((n, i) => (n ? [[i, n]] : [])));
}

describe('HttpStats', () => {
  test('counts requests per listener, route and status; no route is ""', () => {
    const s = new HttpStats();
    s.request('web', 'api', 200, 0.001);
    s.request('web', 'api', 200, 0.002);
    s.request('web', 'api', 502, 0.003);
    s.request('web', '', 404, 0.0001);
    s.request('admin', 'api', 200, 0.001);
    // A status an upstream may send outside 100..599 is counted too; a broken one as 0.
    s.request('web', 'api', 999, 0.001);
    s.request('web', 'api', Number.NaN, 0.001);
    s.request('web', 'api', 200.5, 0.001);
    const snap = s.snapshot();
    expect(isHttpStatsSnapshot(snap)).toBe(true);
    expect(snap.routes).toHaveLength(3);
    expect(codes(series(snap, 'web', 'api'))).toEqual({ '200': 2, '502': 1, '999': 1, '0': 2 });
    expect(codes(series(snap, 'web', ''))).toEqual({ '404': 1 });
    expect(codes(series(snap, 'admin', 'api'))).toEqual({ '200': 1 });
    expect(series(snap, 'web', 'api').count).toBe(6);
    expect(snap.retries).toEqual([]);
  });

  test('durations land in the bucket whose bound is the first >= them; sum and count', () => {
    const s = new HttpStats();
    const at = (seconds: number) => s.request('web', 'r', 200, seconds);
    at(0.0005); // exactly the first bound: le is inclusive
    at(0.0004);
    at(0.0006); // second bucket (le 0.001)
    at(0.003); // le 0.005, index 3
    at(1); // le 1, index 10
    at(10); // last bound, index 13
    at(10.5); // above every bound: only +Inf
    at(-1); // a bad clock: counted as 0
    at(Number.NaN);
    const r = series(s.snapshot(), 'web', 'r');
    expect(r.buckets).toHaveLength(NB + 1);
    expect(filled(r)).toEqual({ 0: 4, 1: 1, 3: 1, 10: 1, 13: 1, [NB]: 1 });
    expect(r.count).toBe(9);
    expect(r.sum).toBeCloseTo(0.0005 + 0.0004 + 0.0006 + 0.003 + 1 + 10 + 10.5, 12);
    expect(HTTP_DURATION_BUCKETS).toEqual([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]);
  });

  test('retries per upstream, rate-limit refusals per listener and route', () => {
    const s = new HttpStats();
    s.retry('api');
    s.retry('api');
    s.retry('auth');
    s.rateLimited('web', 'api');
    s.rateLimited('web', 'api');
    s.rateLimited('web', 'login');
    s.rateLimited('admin', 'api');
    const snap = s.snapshot();
    expect(snap.retries).toEqual([
      { upstream: 'api', count: 2 },
      { upstream: 'auth', count: 1 },
    ]);
    expect(snap.rateLimited).toEqual([
      { listener: 'web', route: 'api', count: 2 },
      { listener: 'web', route: 'login', count: 1 },
      { listener: 'admin', route: 'api', count: 1 },
    ]);
    expect(isHttpStatsSnapshot(snap)).toBe(true);
  });

  test('a snapshot is a copy: later requests do not change it', () => {
    const s = new HttpStats();
    s.request('web', 'r', 200, 0.01);
    s.retry('api');
    const before = s.snapshot();
    const frozen = structuredClone(before);
    s.request('web', 'r', 200, 0.01);
    s.request('web', 'r', 201, 0.01);
    s.retry('api');
    expect(before).toEqual(frozen);
    expect(codes(series(s.snapshot(), 'web', 'r'))).toEqual({ '200': 2, '201': 1 });
  });

  test('a snapshot survives structuredClone and a MessagePort unchanged', async () => {
    const s = new HttpStats();
    s.request('web', 'api', 200, 0.004);
    s.request('web', '', 404, 0.0002);
    s.retry('api');
    s.rateLimited('web', 'api');
    const snap = s.snapshot();
    expect(structuredClone(snap)).toEqual(snap);
    const { port1, port2 } = new MessageChannel();
    try {
      port1.postMessage(snap);
      const [received] = (await once(port2, 'message')) as [HttpStatsSnapshot];
      expect(received).toEqual(snap);
      expect(isHttpStatsSnapshot(received)).toBe(true);
    } finally {
      port1.close();
    }
  });
});

describe('mergeHttpStats', () => {
  test('sums series, codes, buckets, sums, counts and retries; adds series it lacks', () => {
    const a = new HttpStats();
    const b = new HttpStats();
    a.request('web', 'api', 200, 0.001);
    a.request('web', 'api', 500, 2);
    b.request('web', 'api', 200, 0.001);
    b.request('web', 'api', 404, 20);
    b.request('web', 'static', 304, 0.0001);
    a.retry('api');
    b.retry('api');
    b.retry('auth');
    a.rateLimited('web', 'api');
    b.rateLimited('web', 'api');
    b.rateLimited('web', 'static');
    const sa = a.snapshot();
    const sb = b.snapshot();
    const sbCopy = structuredClone(sb);

    const total = emptyHttpStats();
    mergeHttpStats(total, sa);
    mergeHttpStats(total, sb);
    const api = series(total, 'web', 'api');
    expect(codes(api)).toEqual({ '200': 2, '500': 1, '404': 1 });
    expect(api.count).toBe(4);
    expect(api.sum).toBeCloseTo(0.001 + 2 + 0.001 + 20, 12);
    expect(filled(api)).toEqual({ 1: 2, 11: 1, [NB]: 1 });
    expect(codes(series(total, 'web', 'static'))).toEqual({ '304': 1 });
    expect(total.retries).toEqual([
      { upstream: 'api', count: 2 },
      { upstream: 'auth', count: 1 },
    ]);
    expect(total.rateLimited).toEqual([
      { listener: 'web', route: 'api', count: 2 },
      { listener: 'web', route: 'static', count: 1 },
    ]);
    // `from` is left as it was, and nothing of it is shared with the sum.
    expect(sb).toEqual(sbCopy);
    mergeHttpStats(total, sb);
    expect(sb).toEqual(sbCopy);
    expect(codes(series(total, 'web', 'static'))).toEqual({ '304': 2 });
  });
});

describe('isHttpStatsSnapshot', () => {
  test('takes a snapshot and refuses what is not one', () => {
    const s = new HttpStats();
    s.request('web', 'r', 200, 0.01);
    const ok = s.snapshot();
    expect(isHttpStatsSnapshot(ok)).toBe(true);
    expect(isHttpStatsSnapshot(emptyHttpStats())).toBe(true);
    const bad: unknown[] = [
      undefined,
      null,
      true,
      {},
      { routes: [] },
      { routes: [], retries: [{ upstream: 'a', count: -1 }], rateLimited: [] },
      { routes: [], retries: [] },
      { routes: [], retries: [], rateLimited: [{ listener: 'web', count: 1 }] },
      { routes: [{ ...ok.routes[0], buckets: [1, 2] }], retries: [], rateLimited: [] },
      { routes: [{ ...ok.routes[0], codes: { '200': 1 } }], retries: [], rateLimited: [] },
      { routes: [{ ...ok.routes[0], codes: [[200, Number.NaN]] }], retries: [], rateLimited: [] },
      { routes: [{ ...ok.routes[0], sum: 'x' }], retries: [], rateLimited: [] },
      { routes: [{ ...ok.routes[0], listener: 1 }], retries: [], rateLimited: [] },
    ];
    for (const v of bad) expect(isHttpStatsSnapshot(v), JSON.stringify(v)).toBe(false);
  });
});
