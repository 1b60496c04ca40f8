import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { describe, expect, test } from 'vitest';
import { L, StateTable } from '../../src/workers/state-table.ts';
import { hash32 } from '../../src/hub/messages.ts';
import type { FromShard } from '../../src/workers/protocol.ts';
import { ShardHarness, TestClient, hubListener, hubListeners, liveClients, refused, shardConfig, tokenFor, until } from './harness.ts';

const msg = (data: unknown) => JSON.stringify({ type: 'message', from: 'n1', data });

async function delivered(h: ShardHarness, m: Omit<Extract<FromShard, { type: 'hub-delivered' }>, 'type' | 'delivered'> & { to: unknown; frame: string }): Promise<number> {
  const from = h.messages.length;
  h.send({ type: 'hub-deliver', listener: m.listener, to: m.to as never, frame: m.frame, ack: m.ack });
  const r = (await h.waitFor((x) => x.type === 'hub-delivered' && x.ack === m.ack, from)) as Extract<FromShard, { type: 'hub-delivered' }>;
  expect(r.listener).toBe(m.listener);
  return r.delivered;
}

describe('routing from the main thread', () => {
  test('hub-deliver to a user (all its clients), to a client, to all, acknowledged with the number of clients reached', async () => {
    await using h = await ShardHarness.start({ ready: ['n1'] });
    const a1 = await TestClient.connect(h.hubPort, await tokenFor('ann'));
    const a2 = await TestClient.connect(h.hubPort, await tokenFor('ann'));
    const b = await TestClient.connect(h.hubPort, await tokenFor('ben'));
    expect(await delivered(h, { listener: 'hub', to: { kind: 'user', userId: 'ann' }, frame: msg('to ann'), ack: 1 })).toBe(2);
    for (const c of [a1, a2]) expect(await c.next((f) => f.type === 'message')).toEqual({ type: 'message', from: 'n1', data: 'to ann' });
    expect(await delivered(h, { listener: 'hub', to: { kind: 'client', clientId: a2.clientId }, frame: msg('to a2'), ack: 2 })).toBe(1);
    await a2.next((f) => f.data === 'to a2');
    expect(await delivered(h, { listener: 'hub', to: { kind: 'all' }, frame: msg('all'), ack: 3 })).toBe(3);
    for (const c of [a1, a2, b]) await c.next((f) => f.data === 'all');
    expect(await delivered(h, { listener: 'hub', to: { kind: 'user', userId: 'nobody' }, frame: msg('x'), ack: 4 })).toBe(0);
    expect(await delivered(h, { listener: 'hub', to: { kind: 'client', clientId: '0.AAAAAAAAAAAAAAAA' }, frame: msg('x'), ack: 5 })).toBe(0);
    // A listener this shard does not have still answers (the main thread waits for every shard).
    expect(await delivered(h, { listener: 'other', to: { kind: 'all' }, frame: msg('x'), ack: 6 })).toBe(0);
    expect(b.frames.filter((f) => f.type === 'message').map((f) => f.data)).toEqual(['all']);
    expect(a1.frames.filter((f) => f.type === 'message').map((f) => f.data)).toEqual(['to ann', 'all']);
    expect(h.table.listenerGet(0, 0, L.HUB_OUT)).toBe(6);
    // Without ack: delivered, nothing answered.
    const before = h.of('hub-delivered').length;
    h.send({ type: 'hub-deliver', listener: 'hub', to: { kind: 'user', userId: 'ben' }, frame: msg('quiet') });
    await b.next((f) => f.data === 'quiet');
    expect(h.of('hub-delivered')).toHaveLength(before);
    for (const c of [a1, a2, b]) await c.close();
  });

  test('hub-node-down: the clients bound to that node are told and lose the binding; the others are not', async () => {
    await using h = await ShardHarness.start({ ready: ['n1', 'n2'] });
    const c1 = await TestClient.connect(h.hubPort, await tokenFor('u1'));
    const c2 = await TestClient.connect(h.hubPort, await tokenFor('u2'));
    const c3 = await TestClient.connect(h.hubPort, await tokenFor('u3'));
    c1.sendJson({ type: 'send', node: 'n1', data: 1 });
    c1.sendJson({ type: 'send', node: 'n2', data: 1 });
    c2.sendJson({ type: 'request', id: 'r', node: 'n1', data: 1 });
    c3.sendJson({ type: 'send', node: 'n2', data: 1 });
    await until(() => h.of('hub-send').length + h.of('hub-request').length === 4);
    const [l] = hubListeners();
    expect(l!.clients.count('node', 'n1')).toBe(2);
    h.send({ type: 'hub-node-down', listener: 'hub', node: 'n1' });
    expect(await c1.next((f) => f.type === 'node-down')).toEqual({ type: 'node-down', node: 'n1' });
    expect(await c2.next((f) => f.type === 'node-down')).toEqual({ type: 'node-down', node: 'n1' });
    await h.request({ type: 'counts', id: 0 });
    expect(c3.frames.some((f) => f.type === 'node-down')).toBe(false);
    expect(l!.clients.count('node', 'n1')).toBe(0);
    expect(l!.clients.count('node', 'n2')).toBe(2);
    expect(l!.clients.sizes()).toEqual({ byId: 3, user: 3, node: 1 });
    // A second node-down for the same node reaches nobody.
    h.send({ type: 'hub-node-down', listener: 'hub', node: 'n1' });
    await h.request({ type: 'counts', id: 0 });
    expect(c1.frames.filter((f) => f.type === 'node-down')).toHaveLength(1);
    for (const c of [c1, c2, c3]) await c.close();
    await until(() => l!.clients.size === 0);
    expect(l!.clients.sizes()).toEqual({ byId: 0, user: 0, node: 0 });
  });
});

describe('caps and HTTP answers', () => {
  test('maxClientsPerUser holds across two shards sharing the state table (429), and places come back on exit', async () => {
    const table = StateTable.create();
    const listeners = [hubListener({}, { maxClientsPerUser: 2 })];
    await using s0 = await ShardHarness.start({ listeners, table, shard: 0 });
    await using s1 = await ShardHarness.start({ listeners, table, shard: 1 });
    const t = await tokenFor('capped');
    const a = await TestClient.connect(s0.hubPort, t);
    const b = await TestClient.connect(s1.hubPort, t);
    expect(a.clientId.startsWith('0.')).toBe(true);
    expect(b.clientId.startsWith('1.')).toBe(true);
    expect(table.ipCount(0, hash32('capped'))).toBe(2);
    for (const port of [s0.hubPort, s1.hubPort]) {
      const r = await refused(port, t);
      expect(r.status).toBe(429);
      expect(r.body).toMatchObject({ error: 'too_many_clients' });
    }
    expect(table.listenerGet(0, 0, L.OVER_LIMIT) + table.listenerGet(1, 0, L.OVER_LIMIT)).toBe(2);
    // Another user is not affected.
    const other = await TestClient.connect(s1.hubPort, await tokenFor('someone-else'));
    // A client leaving gives its place back on its own shard.
    await b.terminate();
    await until(() => table.ipCount(0, hash32('capped')) === 1);
    const c = await TestClient.connect(s0.hubPort, t);
    expect(s0.of('hub-client-up').filter((m) => m.userId === 'capped')).toHaveLength(2);
    for (const x of [a, c, other]) await x.close();
    await until(() => table.ipEntries(0) === 0);
    expect(table.listenerActiveAll(0)).toBe(0);
  });

  test('maxConnections (503) and maxConnectionsPerIp (429) hold for hub clients too', async () => {
    await using h = await ShardHarness.start({ listeners: [hubListener({ maxConnections: 2 }), hubListener({ name: 'ip', slot: 1, maxConnectionsPerIp: 1 })] });
    const a = await TestClient.connect(h.hubPort, await tokenFor('a'));
    const b = await TestClient.connect(h.hubPort, await tokenFor('b'));
    expect((await refused(h.hubPort, await tokenFor('c'))).status).toBe(503);
    expect(h.table.listenerGet(0, 0, L.ACTIVE)).toBe(2);
    const ipPort = h.ports.get('ip')!;
    const d = await TestClient.connect(ipPort, await tokenFor('d'));
    expect(await refused(ipPort, await tokenFor('e'))).toMatchObject({ status: 429, body: { error: 'over_limit' } });
    await a.close();
    await until(() => h.table.listenerActiveAll(0) === 1);
    const c = await TestClient.connect(h.hubPort, await tokenFor('c'));
    for (const x of [b, c, d]) await x.close();
    await until(() => h.table.listenerActiveAll(0) === 0 && h.table.listenerActiveAll(1) === 0);
    expect(h.table.ipEntries(1)).toBe(0);
  });

  test('plain HTTP gets 426, a wrong path 404, a bad or non-GET upgrade 400', async () => {
    await using h = await ShardHarness.start();
    const get = async (path: string, headers: Record<string, string> = {}, method = 'GET') => {
      const req = http.request({ host: '127.0.0.1', port: h.hubPort, path, method, headers, agent: false });
      req.end();
      const [res] = (await once(req, 'response')) as [http.IncomingMessage];
      let body = '';
      for await (const d of res) body += d;
      return { status: res.statusCode, body };
    };
    expect(await get('/connect')).toMatchObject({ status: 426 });
    expect(await get('/')).toMatchObject({ status: 426 });
    expect((await refused(h.hubPort, await tokenFor('x'), { path: '/nope' })).status).toBe(404);
    const up = { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' };
    const raw = async (method: string, headers: Record<string, string>) => {
      const s = net.connect(h.hubPort, '127.0.0.1');
      await once(s, 'connect');
      s.write(`${method} /connect HTTP/1.1\r\nHost: x\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`);
      let text = '';
      s.on('data', (d) => (text += d));
      await once(s, 'close');
      return text;
    };
    expect(await raw('POST', up)).toMatch(/^HTTP\/1.1 400 /);
    expect(await raw('GET', { ...up, 'Sec-WebSocket-Key': 'short' })).toMatch(/^HTTP\/1.1 400 /);
    expect(await raw('GET', { ...up, 'Sec-WebSocket-Version': '12' })).toMatch(/Sec-WebSocket-Version: 13, 8/);
    // A good handshake without a token: 401, and the socket is closed (no upgrade).
    expect(await raw('GET', up)).toMatch(/^HTTP\/1.1 401 [\s\S]*"missing_token"/);
    expect(liveClients()).toHaveLength(0);
  });
});

describe('reload', () => {
  test('same address: reconfigured in place (new clients get the new settings); a new address: new incarnation first, old clients still served', async () => {
    await using h = await ShardHarness.start({ listeners: [hubListener({}, { maxMessageSize: 4096 })], ready: ['n1'] });
    const port = h.hubPort;
    const first = hubListeners()[0]!;
    const old = await TestClient.connect(port, await tokenFor('old'));
    const cfg = shardConfig([hubListener({ port }, { maxMessageSize: 1024, maxClientsPerUser: 1 })]);
    await h.request({ type: 'config', id: 0, config: cfg });
    expect(hubListeners()).toEqual([first]);
    const fresh = await TestClient.connect(port, await tokenFor('fresh'));
    expect((await refused(port, await tokenFor('fresh'))).status).toBe(429);
    // The old client keeps its 4 KiB frames; the new one is closed at 1 KiB.
    old.sendJson({ type: 'send', data: 'y'.repeat(2000) });
    await until(() => h.of('hub-send').some((m) => m.clientId === old.clientId));
    fresh.sendJson({ type: 'send', data: 'y'.repeat(2000) });
    expect((await fresh.closed).code).toBe(1009);

    // Move to a new port: the new incarnation binds first, the old one drains its client.
    const bound = (await h.request({ type: 'config', id: 0, config: shardConfig([hubListener({ port: 0 }, { maxMessageSize: 1024 })]) })) as { name: string; port: number }[];
    const newPort = bound.find((l) => l.name === 'hub')!.port;
    expect(newPort).not.toBe(port);
    await until(() => first.state === 'draining');
    const moved = await TestClient.connect(newPort, await tokenFor('moved'));
    // Deliveries reach clients of both incarnations.
    expect(await delivered(h, { listener: 'hub', to: { kind: 'all' }, frame: msg('both'), ack: 9 })).toBe(2);
    await old.next((f) => f.data === 'both');
    await moved.next((f) => f.data === 'both');
    await old.close();
    await until(() => first.status === 'exited', 'the retired listener to exit');
    await moved.close();
  });
});
