import diagnostics from 'node:diagnostics_channel';
import { describe, expect, onTestFinished, test } from 'vitest';
import { channels } from '../../src/runtime/events.ts';
import { createMetrics, RESTART_CHANNEL } from '../../src/admin/metrics.ts';
import { FakeBackend, parseExposition, startFixture } from './fixture.ts';

function withCounters(b: FakeBackend): FakeBackend {
  b.counters = [
    { listener: 'web', shard: 0, active: 3, outcomes: { ok: 10, timeout: 1 }, bytesIn: 100, bytesOut: 1_000 },
    { listener: 'web', shard: 1, active: 2, outcomes: { ok: 5, rate_limited: 4 }, bytesIn: 50, bytesOut: 500 },
    { listener: 'tcp-in', shard: 0, active: 0, outcomes: {}, bytesIn: 0, bytesOut: 0 },
  ];
  return b;
}

describe('GET /metrics', () => {
  test('serves Prometheus text with the contract metrics summed across shards', async () => {
    await using f = await startFixture({ backend: withCounters(new FakeBackend()) });
    const r = await f.request('GET', '/metrics');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
    const { samples, types } = parseExposition(r.text);

    expect(samples.get('gatehouse_connections_active{listener="web"}')).toBe(5);
    expect(samples.get('gatehouse_connections_active{listener="tcp-in"}')).toBe(0);
    expect(samples.get('gatehouse_connections_total{listener="web",outcome="ok"}')).toBe(15);
    expect(samples.get('gatehouse_connections_total{listener="web",outcome="timeout"}')).toBe(1);
    expect(samples.get('gatehouse_connections_total{listener="web",outcome="rate_limited"}')).toBe(4);
    expect(samples.get('gatehouse_bytes_total{listener="web",direction="in"}')).toBe(150);
    expect(samples.get('gatehouse_bytes_total{listener="web",direction="out"}')).toBe(1_500);
    expect(samples.get('gatehouse_actors{type="supervisor"}')).toBe(2);
    expect(samples.get('gatehouse_actors{type="connection"}')).toBe(7);
    expect(samples.get('gatehouse_shard_up{shard="0"}')).toBe(1);
    expect(samples.get('gatehouse_shard_up{shard="1"}')).toBe(0);
    expect(samples.get('gatehouse_backend_healthy{upstream="app",backend="127.0.0.1:9001"}')).toBe(1);
    expect(samples.get('gatehouse_backend_healthy{upstream="app",backend="127.0.0.1:9002"}')).toBe(0);
    expect(samples.get('gatehouse_breaker_state{upstream="app",backend="127.0.0.1:9001"}')).toBe(0);
    expect(samples.get('gatehouse_breaker_state{upstream="app",backend="127.0.0.1:9002"}')).toBe(2);

    expect(types.get('gatehouse_connections_active')).toBe('gauge');
    expect(types.get('gatehouse_connections_total')).toBe('counter');
    expect(types.get('gatehouse_bytes_total')).toBe('counter');
    expect(types.get('gatehouse_actor_restarts_total')).toBe('counter');
    expect(types.get('gatehouse_actors')).toBe('gauge');
    expect(types.get('gatehouse_shard_up')).toBe('gauge');
    expect(types.get('gatehouse_backend_healthy')).toBe('gauge');
    expect(types.get('gatehouse_breaker_state')).toBe('gauge');
    // prom-client's process metrics.
    expect(types.get('process_cpu_user_seconds_total')).toBe('counter');
    expect(types.get('nodejs_eventloop_lag_seconds')).toBe('gauge');
  });

  test('values follow the backend between scrapes; vanished series disappear', async () => {
    await using f = await startFixture({ backend: withCounters(new FakeBackend()) });
    await f.request('GET', '/metrics');
    f.backend.counts = { supervisor: 3 };
    f.backend.counters[0]!.outcomes.ok = 20;
    f.backend.view.upstreams[0]!.backends[0]!.breaker = 'open';
    f.backend.shards = [{ shard: 0, up: true }];
    const { samples } = parseExposition((await f.request('GET', '/metrics')).text);
    expect(samples.get('gatehouse_actors{type="supervisor"}')).toBe(3);
    expect(samples.has('gatehouse_actors{type="connection"}')).toBe(false);
    expect(samples.get('gatehouse_connections_total{listener="web",outcome="ok"}')).toBe(25);
    expect(samples.get('gatehouse_breaker_state{upstream="app",backend="127.0.0.1:9001"}')).toBe(1);
    expect(samples.has('gatehouse_shard_up{shard="1"}')).toBe(false);
  });

  test('a failing backend call costs only its own metric', async () => {
    await using f = await startFixture({ backend: withCounters(new FakeBackend()) });
    f.backend.countsError = new Error('shard 1 did not answer');
    f.backend.listenerCounters = () => {
      throw new Error('table gone');
    };
    const r = await f.request('GET', '/metrics');
    expect(r.status).toBe(200);
    const { samples } = parseExposition(r.text);
    expect([...samples.keys()].some((k) => k.startsWith('gatehouse_actors{'))).toBe(false);
    expect([...samples.keys()].some((k) => k.startsWith('gatehouse_connections_active{'))).toBe(false);
    expect(samples.get('gatehouse_shard_up{shard="0"}')).toBe(1);
    expect(f.logs).toContainEqual(expect.objectContaining({ actorType: 'admin', msg: 'metric collection failed', metric: 'gatehouse_actors' }));
  });
});

describe('createMetrics', () => {
  test('counts restarts from the diagnostics channel and from recordRestart, until closed', async () => {
    const m = createMetrics(new FakeBackend());
    onTestFinished(() => m.close());
    expect(channels.restart.name).toBe(RESTART_CHANNEL);
    channels.restart.publish({ supervisor: 'upstream:app', child: 'health:1', restarts: 1 });
    channels.restart.publish({ supervisor: 'upstream:app', child: 'health:1', restarts: 2 });
    m.recordRestart('shard-1');
    let s = parseExposition(await m.registry.metrics()).samples;
    expect(s.get('gatehouse_actor_restarts_total{supervisor="upstream:app"}')).toBe(2);
    expect(s.get('gatehouse_actor_restarts_total{supervisor="shard-1"}')).toBe(1);

    await m.close();
    await m.close();
    expect(diagnostics.hasSubscribers(RESTART_CHANNEL)).toBe(false);
    channels.restart.publish({ supervisor: 'upstream:app', child: 'health:1', restarts: 3 });
    s = parseExposition(await m.registry.metrics()).samples;
    expect(s.get('gatehouse_actor_restarts_total{supervisor="upstream:app"}')).toBe(2);
  });

  test('each instance has its own registry; bad counter values are read as 0', async () => {
    const b = new FakeBackend();
    b.counters = [{ listener: 'x', shard: 0, active: Number.NaN, outcomes: { ok: -5 }, bytesIn: Infinity, bytesOut: 7 }];
    const m1 = createMetrics(b);
    const m2 = createMetrics(b);
    onTestFinished(async () => {
      await Promise.all([m1.close(), m2.close()]);
    });
    expect(m1.registry).not.toBe(m2.registry);
    const s = parseExposition(await m2.registry.metrics()).samples;
    expect(s.get('gatehouse_connections_active{listener="x"}')).toBe(0);
    expect(s.get('gatehouse_connections_total{listener="x",outcome="ok"}')).toBe(0);
    expect(s.get('gatehouse_bytes_total{listener="x",direction="in"}')).toBe(0);
    expect(s.get('gatehouse_bytes_total{listener="x",direction="out"}')).toBe(7);
  });
});
