/**
 * The HTTP metrics on /metrics: shards' snapshots summed by the aggregator, served by the admin
 * server (real HTTP on port 0) through a fake backend, and the daemon's own `httpStats()`.
 */
import pino from 'pino';
import { describe, expect, test } from 'vitest';
import { HTTP_DURATION_BUCKETS, HttpStats, emptyHttpStats, type HttpStatsSnapshot } from '../../src/http/stats.ts';
import { HttpStatsAggregator, type HttpStatsSource } from '../../src/daemon/http-stats.ts';
import { Gatehouse } from '../../src/daemon/gatehouse.ts';
import { parseConfig } from '../../src/config/load.ts';
import { createMetrics } from '../../src/admin/metrics.ts';
import { FakeBackend, parseExposition, startFixture } from './fixture.ts';

const H = 'gatehouse_http_request_duration_seconds';

/** A FakeBackend whose httpStats() is `fn`, counting the calls. */
class HttpBackend extends FakeBackend {
  calls = 0;
  readonly fn: () => Promise<HttpStatsSnapshot>;
  constructor(fn: () => Promise<HttpStatsSnapshot>) {
    super();
    this.fn = fn;
  }
  httpStats(): Promise<HttpStatsSnapshot> {
    this.calls++;
    return this.fn();
  }
}

/** A simulated shard: its HttpStats as the shard thread holds it, and how the main thread asks it. */
class FakeShard implements HttpStatsSource {
  stats = new HttpStats();
  /** When set, the next requests wait for this instead of answering. */
  hold: Promise<unknown> | undefined;
  readonly index: number;
  constructor(index: number) {
    this.index = index;
  }
  request(): Promise<unknown> {
    return this.hold ?? Promise.resolve(structuredClone(this.stats.snapshot()));
  }
}

/**
 * Our lines of a Prometheus text exposition are `# HELP`, `# TYPE` or `name{labels} value`, and a
 * histogram's samples follow its `# TYPE` line. (prom-client's own process metrics are left out:
 * it prints NaN as `Nan`.)
 */
function expectValidExposition(text: string): void {
  const sample = /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (?:[+-]?Inf|NaN|-?[0-9.e+-]+)$/;
  let family = '';
  for (const line of text.split('\n')) {
    const t = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (t) family = t[1]!;
    if (line === '' || line.startsWith('# HELP ') || t || !line.startsWith('gatehouse_')) continue;
    expect(line).toMatch(sample);
    expect(line.startsWith(family), `${line} under # TYPE ${family}`).toBe(true);
  }
}

describe('HTTP metrics on /metrics', () => {
  test('requests by code, cumulative duration buckets with +Inf, _sum, _count, and retries, summed over shards', async () => {
    const s0 = new HttpStats();
    const s1 = new HttpStats();
    s0.request('web', 'api', 200, 0.0004); // le 0.0005
    s0.request('web', 'api', 200, 0.003); // le 0.005
    s1.request('web', 'api', 200, 0.003);
    s1.request('web', 'api', 503, 0.2); // le 0.25
    s1.request('web', 'api', 504, 30); // +Inf only
    s0.request('web', '', 404, 0.0001);
    s0.retry('api');
    s1.retry('api');
    s1.retry('auth');
    s0.rateLimited('web', 'api');
    s1.rateLimited('web', 'api');
    const agg = new HttpStatsAggregator();
    const sources: HttpStatsSource[] = [
      { index: 0, request: async () => s0.snapshot() },
      { index: 1, request: async () => s1.snapshot() },
    ];
    const backend = new HttpBackend(() => agg.collect(sources));
    // A listener-wide limit (state table) refused 3 connections of the same listener.
    backend.counters = [{ listener: 'web', shard: 0, active: 0, outcomes: { rate_limited: 3 }, bytesIn: 0, bytesOut: 0 }];
    await using f = await startFixture({ backend });
    const r = await f.request('GET', '/metrics');
    expect(r.status).toBe(200);
    // The metrics share one ask of the shards per scrape.
    expect(backend.calls).toBe(1);
    expectValidExposition(r.text);
    const { samples, types } = parseExposition(r.text);

    expect(types.get('gatehouse_http_requests_total')).toBe('counter');
    expect(types.get(H)).toBe('histogram');
    expect(types.get('gatehouse_upstream_retries_total')).toBe('counter');
    expect(r.text).toContain(`# HELP ${H} `);

    expect(samples.get('gatehouse_http_requests_total{listener="web",route="api",code="200"}')).toBe(3);
    expect(samples.get('gatehouse_http_requests_total{listener="web",route="api",code="503"}')).toBe(1);
    expect(samples.get('gatehouse_http_requests_total{listener="web",route="api",code="504"}')).toBe(1);
    expect(samples.get('gatehouse_http_requests_total{listener="web",route="",code="404"}')).toBe(1);

    const bucket = (route: string, le: string) => samples.get(`${H}_bucket{listener="web",route="${route}",le="${le}"}`);
    const expected: Record<string, number> = { '0.0005': 1, '0.001': 1, '0.0025': 1, '0.005': 3, '0.01': 3, '0.1': 3, '0.25': 4, '5': 4, '10': 4, '+Inf': 5 };
    for (const [le, n] of Object.entries(expected)) expect(bucket('api', le), `le=${le}`).toBe(n);
    // Every bound is there, in order, and the counts never decrease.
    const les = [...samples.keys()].filter((k) => k.startsWith(`${H}_bucket{listener="web",route="api"`)).map((k) => /le="([^"]+)"/.exec(k)![1]!);
    expect(les).toEqual([...HTTP_DURATION_BUCKETS.map(String), '+Inf']);
    const counts = les.map((le) => bucket('api', le)!);
    expect(counts).toEqual([...counts].sort((a, b) => a - b));
    expect(samples.get(`${H}_count{listener="web",route="api"}`)).toBe(5);
    expect(samples.get(`${H}_sum{listener="web",route="api"}`)).toBeCloseTo(0.0004 + 0.003 + 0.003 + 0.2 + 30, 9);
    expect(bucket('', '0.0005')).toBe(1);
    expect(samples.get(`${H}_count{listener="web",route=""}`)).toBe(1);

    expect(samples.get('gatehouse_upstream_retries_total{upstream="api"}')).toBe(2);
    expect(samples.get('gatehouse_upstream_retries_total{upstream="auth"}')).toBe(1);
    // A route's limit (the shards' counts) next to the listener-wide one (route "").
    expect(samples.get('gatehouse_ratelimit_rejected_total{listener="web",route="api"}')).toBe(2);
    expect(samples.get('gatehouse_ratelimit_rejected_total{listener="web",route=""}')).toBe(3);
  });

  test('a failing httpStats() costs only the HTTP metrics, logged; the scrape still answers', async () => {
    const backend = new HttpBackend(() => Promise.reject(new Error('no shards')));
    backend.counters = [{ listener: 'web', shard: 0, active: 0, outcomes: { rate_limited: 3 }, bytesIn: 0, bytesOut: 0 }];
    await using f = await startFixture({ backend });
    const r = await f.request('GET', '/metrics');
    expect(r.status).toBe(200);
    expectValidExposition(r.text);
    const { samples, types } = parseExposition(r.text);
    expect(types.get(H)).toBe('histogram');
    expect([...samples.keys()].some((k) => k.startsWith('gatehouse_http_') || k.startsWith('gatehouse_upstream_retries'))).toBe(false);
    // The listener-wide rate limit (state table) still shows, without the routes'.
    expect([...samples.entries()].filter(([k]) => k.startsWith('gatehouse_ratelimit_rejected_total{'))).toEqual([['gatehouse_ratelimit_rejected_total{listener="web",route=""}', 3]]);
    expect(samples.get('gatehouse_shard_up{shard="0"}')).toBe(1);
    expect(f.logs).toContainEqual(expect.objectContaining({ msg: 'metric collection failed', metric: H }));
  });
});

describe('HttpStatsAggregator', () => {
  test('counters never go backwards across a shard replacement (its last snapshot is kept)', async () => {
    const shards = [new FakeShard(0), new FakeShard(1)];
    const agg = new HttpStatsAggregator();
    const backend = new HttpBackend(() => agg.collect(shards));
    await using f = await startFixture({ backend });
    const scrape = async (): Promise<Map<string, number>> => parseExposition((await f.request('GET', '/metrics')).text).samples;
    const OK = 'gatehouse_http_requests_total{listener="web",route="api",code="200"}';
    const COUNT = `${H}_count{listener="web",route="api"}`;
    const RETRIES = 'gatehouse_upstream_retries_total{upstream="api"}';

    for (let i = 0; i < 5; i++) shards[0]!.stats.request('web', 'api', 200, 0.01);
    for (let i = 0; i < 3; i++) shards[1]!.stats.request('web', 'api', 200, 0.01);
    shards[0]!.stats.retry('api');
    let m = await scrape();
    expect([m.get(OK), m.get(COUNT), m.get(RETRIES)]).toEqual([8, 8, 1]);

    // Shard 0 counts two more that no scrape sees, then crashes: its thread is replaced, and the
    // new incarnation starts from zero.
    shards[0]!.stats.request('web', 'api', 200, 0.01);
    shards[0]!.stats.request('web', 'api', 200, 0.01);
    agg.retire(0);
    shards[0] = new FakeShard(0);
    m = await scrape();
    // The 5 scraped before the crash stay; the 2 since are lost with the thread (documented).
    expect([m.get(OK), m.get(COUNT), m.get(RETRIES)]).toEqual([8, 8, 1]);

    shards[0]!.stats.request('web', 'api', 200, 0.01);
    shards[1]!.stats.request('web', 'api', 200, 0.01);
    m = await scrape();
    expect([m.get(OK), m.get(COUNT), m.get(RETRIES)]).toEqual([10, 10, 1]);
    expect(m.get(`${H}_bucket{listener="web",route="api",le="+Inf"}`)).toBe(10);
  });

  test('a shard that does not answer in time counts with its last snapshot; an invalid answer is no data', async () => {
    const shards = [new FakeShard(0), new FakeShard(1)];
    const agg = new HttpStatsAggregator({ waitMs: 100 });
    shards[0]!.stats.request('web', 'api', 200, 0.01);
    shards[1]!.stats.request('web', 'api', 200, 0.01);
    expect((await agg.collect(shards)).routes[0]!.count).toBe(2);

    // Shard 1 hangs: the scrape ends at the deadline with shard 1's last snapshot.
    shards[0]!.stats.request('web', 'api', 200, 0.01);
    shards[1]!.stats.request('web', 'api', 200, 0.01);
    let release!: (v: unknown) => void;
    shards[1]!.hold = new Promise((r) => (release = r));
    const started = performance.now();
    expect((await agg.collect(shards)).routes[0]!.count).toBe(3);
    expect(performance.now() - started).toBeLessThan(1_000);
    // Its late answer is still its freshest data, taken when it comes.
    release(shards[1]!.stats.snapshot());
    shards[1]!.hold = undefined;
    expect((await agg.collect(shards)).routes[0]!.count).toBe(4);

    // A shard that does not know the request answers nothing (or garbage): no data, last kept.
    shards[1]!.hold = Promise.resolve(undefined);
    shards[0]!.stats.request('web', 'api', 200, 0.01);
    expect((await agg.collect(shards)).routes[0]!.count).toBe(5);
    shards[1]!.hold = Promise.resolve({ routes: 'no' });
    expect((await agg.collect(shards)).routes[0]!.count).toBe(5);
    shards[1]!.hold = Promise.reject(new Error('shard went down'));
    expect((await agg.collect(shards)).routes[0]!.count).toBe(5);
    expect(agg.record(1, null)).toBe(false);
  });

  test('an answer asked of an incarnation that ended meanwhile is dropped, not counted twice', async () => {
    const shard = new FakeShard(0);
    const agg = new HttpStatsAggregator({ waitMs: 50 });
    shard.stats.request('web', 'api', 200, 0.01);
    let release!: (v: unknown) => void;
    shard.hold = new Promise((r) => (release = r));
    const first = agg.collect([shard]);
    agg.retire(0);
    release(shard.stats.snapshot());
    // Retired before its answer came: nothing of it was received, so nothing is kept.
    expect(await first).toEqual(emptyHttpStats());
    expect(agg.total()).toEqual(emptyHttpStats());
  });
});

describe('Gatehouse.httpStats()', () => {
  test('asks the running shard and never fails the scrape (workers: 0)', async () => {
    const config = parseConfig(
      `
admin: { listen: "127.0.0.1:0" }
runtime: { workers: 0, shutdownTimeout: 1s }
log: { level: silent }
upstreams:
  - name: app
    backends: [127.0.0.1:9]
    healthCheck: { type: tcp, interval: 60s }
listeners:
  - name: tcp-in
    protocol: tcp
    listen: 127.0.0.1:0
    upstream: app
`,
      'http-metrics.yaml',
    );
    const gh = await Gatehouse.start({ config, log: pino({ level: 'silent' }) });
    const metrics = createMetrics(gh);
    try {
      const snap = await gh.httpStats();
      // No HTTP listener serves yet: an empty sum, whether the shard answers or times out.
      expect(snap.routes).toEqual([]);
      const text = await metrics.registry.metrics();
      expectValidExposition(text);
      const { types } = parseExposition(text);
      expect(types.get('gatehouse_http_requests_total')).toBe('counter');
      expect(types.get(H)).toBe('histogram');
      expect(types.get('gatehouse_upstream_retries_total')).toBe('counter');
    } finally {
      await metrics.close();
      await gh.stop();
    }
  });
});
