import { describe, expect, test } from 'vitest';
import { Daemon, metric, tempDir, until } from '../helpers/daemon.ts';
import { roundTrip, startEchoServer } from '../helpers/net.ts';
import { RedisServer } from '../helpers/redis.ts';

interface ClusterView {
  redis: 'up' | 'down';
  instanceId: string;
  instances: { instanceId: string; lastHeartbeat: string; self: boolean }[];
}

const config = (redis: string, id: string, echo: number, prefix: string) => `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 2s }
cluster: { redis: "${redis}", instanceId: ${id}, keyPrefix: "${prefix}", heartbeat: 200ms, deadAfter: 1s }
upstreams: [ { name: app, backends: [ "127.0.0.1:${echo}" ] } ]
listeners:
  - { name: in, protocol: tcp, listen: "127.0.0.1:0", upstream: app }
`;

describe('cluster mode: instances and Redis faults', () => {
  test('instances see each other; Redis down at start, stopped and restarted: every instance serves, logs once per change, exports gatehouse_cluster_up; a kill -9 leaves the list after deadAfter', async () => {
    await using echo = await startEchoServer();
    await using redis = await RedisServer.start();
    await redis.stop(); // down at start
    using dir = tempDir();
    const prefix = `t${process.pid}-${Date.now()}:`;
    await using a = await Daemon.start(dir.write('a.yaml', config(redis.url, 'gw-a', echo.port, prefix)));
    await using b = await Daemon.start(dir.write('b.yaml', config(redis.url, 'gw-b', echo.port, prefix)));
    const view = (d: Daemon) => d.json<ClusterView>('/cluster');
    const up = async (d: Daemon) => metric(await (await d.admin('/metrics')).text(), 'gatehouse_cluster_up');

    // Down at start: serving on local state.
    expect(await roundTrip(a.port('in'), 'local')).toBe('local');
    expect((await view(a)).redis).toBe('down');
    expect(await up(a)).toBe(0);

    // Redis comes: both go up and list each other.
    await redis.restart();
    for (const d of [a, b]) {
      await until(async () => (await view(d)).instances.map((i) => i.instanceId).sort().join() === 'gw-a,gw-b', 10_000, 'both instances listed');
      expect(await up(d)).toBe(1);
    }
    expect((await view(a)).instances.find((i) => i.self)?.instanceId).toBe('gw-a');

    // Redis stops mid-run: both keep serving, go down, and log it once.
    await redis.stop();
    await until(async () => (await view(a)).redis === 'down' && (await view(b)).redis === 'down', 10_000, 'both down');
    expect(await roundTrip(a.port('in'), 'still')).toBe('still');
    // A paused Redis (answers nothing) is down too, once it is back the instances are up again.
    await redis.restart();
    await until(async () => (await view(a)).redis === 'up' && (await view(b)).redis === 'up', 10_000, 'both up again');
    redis.pause(true);
    await until(async () => (await view(a)).redis === 'down', 10_000, 'a paused Redis is down');
    redis.pause(false);
    await until(async () => (await view(a)).redis === 'up', 10_000, 'up after the pause');
    for (const d of [a, b]) {
      const downs = d.logs.filter((l) => l.msg === 'cluster: redis down, serving with local state').length;
      const ups = d.logs.filter((l) => l.msg === 'cluster: redis up').length;
      // Once per change: down at start, up, down, up, (a: down, up).
      expect(ups).toBeGreaterThanOrEqual(2);
      expect(downs).toBeGreaterThanOrEqual(2);
      expect(ups).toBeLessThanOrEqual(3);
      expect(downs).toBeLessThanOrEqual(3);
    }

    // kill -9 of b: a drops it within deadAfter (plus a heartbeat).
    b.child.kill('SIGKILL');
    await b.exited;
    b.skipIdleCheck = 'killed';
    await until(async () => (await view(a)).instances.map((i) => i.instanceId).join() === 'gw-a', 5_000, 'b gone from the list');
  });
});
