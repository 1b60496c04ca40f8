import net from 'node:net';
import { once } from 'node:events';
import pino from 'pino';
import { describe, expect, test } from 'vitest';
import { NodeStreamActor, backoffDelay, NODE_BACKOFF_BASE_MS, NODE_BACKOFF_CAP_MS } from '../../src/actors/node-stream.ts';
import { live } from '../../src/runtime/live.ts';
import { HubNode } from '../helpers/hub-node.ts';
import { until } from '../helpers/daemon.ts';

const log = pino({ level: 'silent' });

/** A node stream with short timers, recording its ready/down calls and the frames it got. */
function stream(url: string, o: { pingIntervalMs?: number; connectTimeoutMs?: number; random?: () => number } = {}) {
  const events: string[] = [];
  const frames: string[] = [];
  const s = new NodeStreamActor({
    id: 'node:hub/n1',
    listener: 'hub',
    node: 'n1',
    url,
    log,
    settings: () => ({ pingIntervalMs: o.pingIntervalMs ?? 60_000, gateId: 'gw-test' }),
    onFrame: (text, binary) => frames.push(binary ? '<binary>' : text),
    onReady: () => events.push('ready'),
    onDown: () => events.push('down'),
    connectTimeoutMs: o.connectTimeoutMs ?? 2_000,
    backoffBaseMs: 10,
    backoffCapMs: 50,
    random: o.random,
  });
  return { s, events, frames, [Symbol.asyncDispose]: async () => void (await s.shutdown(2_000)) };
}

describe('backoff', () => {
  test('full jitter: a random delay below min(cap, base * 2^attempt)', () => {
    expect(backoffDelay(0, 100, 5_000, () => 0.999)).toBe(99);
    expect(backoffDelay(3, 100, 5_000, () => 0.5)).toBe(400);
    expect(backoffDelay(10, 100, 5_000, () => 0.999)).toBe(4_995);
    expect(backoffDelay(1_000, 100, 5_000, () => 0.5)).toBe(2_500);
    expect(backoffDelay(5, 100, 5_000, () => 0)).toBe(0);
    // Defaults documented in node-stream.ts.
    expect([NODE_BACKOFF_BASE_MS, NODE_BACKOFF_CAP_MS]).toEqual([100, 5_000]);
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(4);
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThan(1_600);
    }
  });
});

describe('NodeStreamActor', () => {
  test('dials, sends hello first, and carries frames both ways', async () => {
    await using node = await HubNode.start();
    await using st = stream(node.url);
    st.s.start();
    expect(st.s.type).toBe('node-stream');
    await until(() => st.s.state === 'ready', 5_000, 'ready');
    const hello = await node.waitFor((f) => f.type === 'hello');
    expect(node.received[0]!.frame).toEqual({ type: 'hello', gateId: 'gw-test' });
    expect(hello.gateId).toBe('gw-test');
    expect(st.events).toEqual(['ready']);
    expect(st.s.sendFrame(JSON.stringify({ type: 'presence', userId: 'u1', online: true }))).toBe(true);
    await node.waitFor((f) => f.type === 'presence');
    // The hello is the first frame of the connection, before anything sent after it.
    expect(node.received.map((r) => r.frame.type)).toEqual(['hello', 'presence']);
    node.broadcast({ n: 1 });
    await until(() => st.frames.length === 1, 5_000, 'frame');
    expect(JSON.parse(st.frames[0]!)).toEqual({ type: 'broadcast', data: { n: 1 } });
  });

  test('keepalive: pings every interval, a node that answers stays ready on one connection', async () => {
    await using node = await HubNode.start();
    await using st = stream(node.url, { pingIntervalMs: 25 });
    st.s.start();
    await until(() => node.pings >= 5, 5_000, 'five pings');
    expect(st.s.state).toBe('ready');
    expect(node.accepted).toBe(1);
    expect(st.events).toEqual(['ready']);
  });

  test('a node that stops answering pings is found dead within two intervals, terminated, and dialed again', async () => {
    await using node = await HubNode.start({ autoPong: false });
    await using st = stream(node.url, { pingIntervalMs: 40 });
    st.s.start();
    await until(() => st.events.includes('down'), 5_000, 'dead node detected');
    expect(st.events.slice(0, 2)).toEqual(['ready', 'down']);
    expect((st.s.describe().lastError as string) ?? '').toMatch(/no pong within 80 ms/);
    // Pings sent before it was declared dead: two unanswered, no more.
    expect(node.pings).toBeLessThanOrEqual(3);
    // The dead connection was terminated and a new one made (backoff, then connecting).
    await until(() => node.accepted >= 2, 5_000, 'redial');
  });

  test('node restart: backoff with jitter, reconnect, hello again, frames flow again', async () => {
    await using node = await HubNode.start();
    const delays: number[] = [];
    await using st = stream(node.url, {
      random: () => {
        const r = Math.random();
        delays.push(r);
        return r;
      },
    });
    st.s.start();
    await until(() => st.s.state === 'ready', 5_000, 'ready');
    await node.stop();
    await until(() => st.events.includes('down'), 5_000, 'down');
    expect(st.s.sendFrame('{"type":"presence","userId":"u","online":true}')).toBe(false);
    // Retries while the node is away: each waits a jittered delay.
    await until(() => delays.length >= 3, 5_000, 'three backoffs');
    expect(['backoff', 'connecting']).toContain(st.s.state);
    await node.restart();
    await until(() => st.s.state === 'ready', 5_000, 'ready again');
    expect(st.events.filter((e) => e === 'ready')).toHaveLength(2);
    await node.waitFor((f, conn) => f.type === 'hello' && conn === 2);
    expect(st.s.sendFrame('{"type":"client-gone","clientId":"0.x","userId":"u"}')).toBe(true);
    await node.waitFor((f, conn) => f.type === 'client-gone' && conn === 2);
  });

  test('connect timeout: a peer that accepts TCP but never answers the handshake', async () => {
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((s) => {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    });
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const port = (silent.address() as net.AddressInfo).port;
    try {
      await using st = stream(`ws://127.0.0.1:${port}/gate`, { connectTimeoutMs: 80 });
      st.s.start();
      await until(() => String(st.s.describe().lastError ?? '').includes('no connection within 80 ms'), 5_000, 'connect timeout');
      expect(st.events).toEqual([]);
      await until(() => (st.s.describe().attempt as number) >= 2, 5_000, 'redials');
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
      await once(silent, 'close');
    }
  });

  test('a kill releases the socket and every timer (xstate#4726); graceful stop closes 1001', async () => {
    await using node = await HubNode.start();
    const a = stream(node.url, { pingIntervalMs: 20 });
    a.s.start();
    await until(() => a.s.state === 'ready' && node.sockets.size === 1, 5_000, 'ready');
    a.s.kill();
    expect(a.s.status).toBe('exited');
    await until(() => node.sockets.size === 0, 5_000, 'socket released');

    const b = stream(node.url);
    b.s.start();
    await until(() => b.s.state === 'ready' && node.sockets.size === 1, 5_000, 'ready');
    const [ws] = [...node.sockets];
    const closed = once(ws!, 'close');
    const down = await b.s.shutdown(2_000);
    expect(down.reason).toBe('shutdown');
    expect(b.events).toEqual(['ready', 'down']);
    const [code] = (await closed) as [number];
    expect(code).toBe(1001);

    // A crash (fault injection) releases it too.
    const c = stream(node.url);
    c.s.start();
    await until(() => c.s.state === 'ready' && node.sockets.size === 1, 5_000, 'ready');
    expect(c.s.crash()).toBe(true);
    await until(() => node.sockets.size === 0, 5_000, 'socket released after crash');
    expect(live.list().filter((x) => x.type === 'node-stream')).toEqual([]);
  });
});
