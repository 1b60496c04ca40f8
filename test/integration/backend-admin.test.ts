import { describe, expect, test } from 'vitest';
import { Daemon, tempDir, until } from '../helpers/daemon.ts';
import { httpGet, startHttpBackend } from '../helpers/backends.ts';

/**
 * Backend maintenance through the admin API (HAProxy's runtime API): drain, disable, enable and
 * weight of one backend, without a reload; what `/upstreams` shows; a reload keeps the state.
 */
describe('backend maintenance (workers: 2)', () => {
  test('drain and disable stop new traffic to a backend, enable brings it back, a weight applies at once and survives a reload', async () => {
    await using a = await startHttpBackend('a');
    await using b = await startHttpBackend('b');
    using dir = tempDir();
    const yaml = (extra = '') => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 2s }
upstreams:
  - name: app
    balance: weighted_round_robin
    backends: [ "${a.address}", "${b.address}" ]
    healthCheck: { type: http, interval: 100ms, timeout: 90ms }
listeners:
  - { name: in, protocol: tcp, listen: "127.0.0.1:0", upstream: app }${extra}
`;
    const file = dir.write('gh.yaml', yaml());
    await using gh = await Daemon.start(file);
    const port = gh.port('in');
    const hits = async (n: number) => {
      const seen = { a: 0, b: 0 };
      for (let i = 0; i < n; i++) seen[(await httpGet(port, '/')).body as 'a' | 'b']++;
      return seen;
    };
    const post = (path: string) => gh.admin(path, { method: 'POST' });
    const backend = async (address: string) => {
      const u = await gh.json<{ upstreams: { name: string; backends: { address: string; admin: string; weight: number; healthy: boolean }[] }[] }>('/upstreams');
      return u.upstreams[0]!.backends.find((x) => x.address === address)!;
    };
    expect((await hits(8)).a).toBeGreaterThan(0);

    // Drain b: no new connection reaches it.
    const r = await post(`/upstreams/app/backends/${b.address}/drain`);
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({ address: b.address, admin: 'drain' });
    expect(await hits(10)).toEqual({ a: 10, b: 0 });

    // Disable (maintenance): no traffic, and its probe pauses (b's probe count stops growing).
    expect((await post(`/upstreams/app/backends/${b.address}/disable`)).status).toBe(200);
    expect((await backend(b.address)).admin).toBe('maint');
    const probesThen = b.probes.length;
    const aProbes = a.probes.length;
    await until(() => a.probes.length >= aProbes + 3, 5_000, 'three more probes of a');
    expect(b.probes.length - probesThen).toBeLessThanOrEqual(1); // at most one already under way
    expect(await hits(6)).toEqual({ a: 6, b: 0 });

    // Enable: traffic again.
    expect((await post(`/upstreams/app/backends/${b.address}/enable`)).status).toBe(200);
    expect((await hits(10)).b).toBeGreaterThan(0);

    // Weight 0 for a: everything to b; it shows in /upstreams and stays across a reload.
    expect((await post(`/upstreams/app/backends/${a.address}/weight?weight=0`)).status).toBe(200);
    expect((await backend(a.address)).weight).toBe(0);
    expect(await hits(6)).toEqual({ a: 0, b: 6 });
    dir.write('gh.yaml', yaml('\n  - { name: in2, protocol: tcp, listen: "127.0.0.1:0", upstream: app }'));
    expect((await post('/reload')).status).toBe(200);
    expect((await backend(a.address)).weight).toBe(0);
    expect(await hits(4)).toEqual({ a: 0, b: 4 });

    // Bad requests: a named error, nothing changed.
    expect((await post(`/upstreams/app/backends/127.0.0.1:1/drain`)).status).toBe(404);
    expect((await post(`/upstreams/app/backends/${a.address}/reboot`)).status).toBe(404);
    expect((await post(`/upstreams/app/backends/${a.address}/weight?weight=-1`)).status).toBe(400);
    expect(await gh.idleLeftovers()).toEqual([]);
  });
});
