/**
 * The hub end to end through `Gatehouse.start` (workers: 0: the shard runs in this thread): real
 * `ws` clients, a real node server, the control plane in the daemon, metrics and /actors views.
 */
import pino from 'pino';
import { describe, expect, test } from 'vitest';
import { Gatehouse } from '../../src/daemon/gatehouse.ts';
import { parseConfig } from '../../src/config/load.ts';
import { createMetrics } from '../../src/admin/metrics.ts';
import { HubNode } from '../helpers/hub-node.ts';
import { metric, tempDir, until } from '../helpers/daemon.ts';
import { SECRET, TestClient, hubListeners as liveHubListeners, tokenFor } from './harness.ts';
import type { TreeNode } from '../../src/runtime/actor.ts';

const log = pino({ level: 'silent' });

function config(nodeUrl: string) {
  return parseConfig(
    `
admin: { listen: "127.0.0.1:0" }
runtime: { workers: 0, shutdownTimeout: 2s }
cluster: { redis: "redis://127.0.0.1:6379", instanceId: gw-e2e }   # cluster mode is not built yet: only the instance id is used
listeners:
  - name: hub
    protocol: hub
    listen: 127.0.0.1:0
    path: /connect
    auth: { jwt: { secret: ${SECRET} } }
    nodes: [ { id: n1, url: "${nodeUrl}" } ]
    presenceGrace: 30ms
    requestTimeout: 2s
`,
    'e2e.yaml',
  );
}

/** A config file's text: one hub listener with these nodes, or none. */
function yaml(nodes: [string, string][] | undefined): string {
  const hub = nodes
    ? `listeners:
  - name: hub
    protocol: hub
    listen: 127.0.0.1:0
    auth: { jwt: { secret: ${SECRET} } }
    nodes: [ ${nodes.map(([id, url]) => `{ id: ${id}, url: "${url}" }`).join(', ')} ]
    presenceGrace: 0ms
`
    : 'listeners: []\n';
  return `admin: { listen: "127.0.0.1:0" }\nruntime: { workers: 0, shutdownTimeout: 2s }\nlog: { level: silent }\n${hub}`;
}

function find(n: TreeNode, pred: (n: TreeNode) => boolean): TreeNode[] {
  return [...(pred(n) ? [n] : []), ...n.children.flatMap((c) => find(c, pred))];
}

describe('hub through the daemon (workers: 0)', () => {
  test('hello with the instance id, request/response, push to a user, presence, node restart, metrics and /actors; everything back to zero', async () => {
    await using node = await HubNode.start();
    const gh = await Gatehouse.start({ config: config(node.url), log });
    const clients: TestClient[] = [];
    try {
      expect(await node.waitFor((f) => f.type === 'hello')).toEqual({ type: 'hello', gateId: 'gw-e2e' });
      const [listener] = liveHubListeners();
      const port = listener!.address!.port;
      await until(() => (listener!.describe().readyNodes as string[]).includes('n1'), 5_000, 'the shard knows n1 is ready');

      const a = await TestClient.connect(port, await tokenFor('u1'));
      const b = await TestClient.connect(port, await tokenFor('u1'));
      clients.push(a, b);
      await node.waitFor((f) => f.type === 'presence' && f.userId === 'u1' && f.online === true);

      a.sendJson({ type: 'request', id: 'r1', node: 'n1', data: { q: 1 } });
      expect(await a.next((f) => f.type === 'response')).toEqual({ type: 'response', id: 'r1', data: { echo: { q: 1 } } });

      node.push({ userId: 'u1', data: 'hi', id: 'p1' });
      for (const c of [a, b]) expect(await c.next((f) => f.type === 'message')).toEqual({ type: 'message', from: 'n1', data: 'hi' });
      expect(await node.waitFor((f) => f.type === 'ack')).toEqual({ type: 'ack', id: 'p1', delivered: 2 });

      // The node restarts: clients bound to it hear node-down; then messages flow again.
      await node.stop();
      await a.next((f) => f.type === 'node-down');
      await node.restart();
      await node.waitFor((f, conn) => f.type === 'hello' && conn === 2);
      await until(() => (listener!.describe().readyNodes as string[]).includes('n1'), 5_000, 'n1 ready again');
      a.sendJson({ type: 'send', node: 'n1', data: 'again' });
      expect(await node.waitFor((f, conn) => f.type === 'client-message' && conn === 2)).toMatchObject({ type: 'client-message', clientId: a.clientId, userId: 'u1', data: 'again' });

      const metrics = createMetrics(gh, { log });
      try {
        const text = await metrics.registry.metrics();
        expect(metric(text, 'gatehouse_hub_clients', { listener: 'hub' })).toBe(2);
        expect(metric(text, 'gatehouse_hub_users_online')).toBe(1);
        expect(metric(text, 'gatehouse_hub_messages_total', { direction: 'client_to_node' })).toBeGreaterThanOrEqual(2);
        expect(metric(text, 'gatehouse_hub_messages_total', { direction: 'node_to_client' })).toBeGreaterThanOrEqual(2);

        const tree = await gh.tree({});
        const hubs = find(tree, (n) => n.id === 'hubs')[0]!;
        expect(tree.children.map((c) => c.id)).toEqual(['admin', 'actors', 'cluster', 'registry', 'upstreams', 'hubs', 'shards']);
        expect(find(hubs, (n) => n.type === 'node-stream').map((n) => [n.id, n.state])).toEqual([['node:hub/n1', 'ready']]);
        expect(find(hubs, (n) => n.type === 'presence')[0]).toMatchObject({ clients: 2, users: 1 });

        for (const c of clients) await c.close();
        await until(() => gh.hubStats().usersOnline === 0, 5_000, 'offline after the grace');
        await node.waitFor((f) => f.type === 'presence' && f.userId === 'u1' && f.online === false);
        const after = await metrics.registry.metrics();
        expect(metric(after, 'gatehouse_hub_clients', { listener: 'hub' })).toBe(0);
        expect(metric(after, 'gatehouse_hub_users_online')).toBe(0);
        const tree2 = await gh.tree({});
        expect(find(tree2, (n) => n.type === 'presence')[0]).toMatchObject({ clients: 0, users: 0, inGrace: 0, shards: 0 });
        expect(find(tree2, (n) => n.type === 'hub-requests')[0]).toMatchObject({ pending: 0, byClient: 0, byNode: 0, acks: 0 });
        expect(gh.hubView().listeners[0]).toMatchObject({ listener: 'hub', clients: 0, usersOnline: 0, pendingRequests: 0, pendingAcks: 0, nodes: [{ id: 'n1', ready: true }] });
      } finally {
        await metrics.close();
      }
    } finally {
      for (const c of clients) await c.close().catch(() => {});
      await gh.stop();
    }
  });

  test('reload through the daemon: a node added and one removed, then the hub listener removed and added back', async () => {
    await using n1 = await HubNode.start();
    await using n2 = await HubNode.start();
    using dir = tempDir();
    const file = dir.write('gh.yaml', yaml([['n1', n1.url]]));
    const gh = await Gatehouse.start({ config: parseConfig(yaml([['n1', n1.url]]), file), configFile: file, log });
    try {
      await n1.waitFor((f) => f.type === 'hello');
      const readyAtShard = (): string[] => (liveHubListeners()[0]?.describe().readyNodes as string[] | undefined) ?? [];
      await until(() => readyAtShard().join() === 'n1', 5_000, 'shard knows n1');

      dir.write('gh.yaml', yaml([['n2', n2.url]]));
      const r1 = await gh.reload();
      expect(r1).toMatchObject({ ok: true, changed: ['listener:hub'] });
      await n2.waitFor((f) => f.type === 'hello');
      await until(() => n1.sockets.size === 0, 5_000, 'n1 stream closed');
      await until(() => readyAtShard().join() === 'n2', 5_000, 'shard knows n2 only');
      const streams = (t: TreeNode) => find(t, (n) => n.type === 'node-stream').map((n) => n.id);
      expect(streams(await gh.tree({}))).toEqual(['node:hub/n2']);

      const port = liveHubListeners()[0]!.address!.port;
      const c = await TestClient.connect(port, await tokenFor('u1'));
      await n2.waitFor((f) => f.type === 'presence' && f.online === true);
      c.sendJson({ type: 'request', id: 'r1', data: 1 });
      expect(await c.next((f) => f.type === 'response')).toEqual({ type: 'response', id: 'r1', data: { echo: 1 } });
      await c.close();
      await n2.waitFor((f) => f.type === 'presence' && f.online === false);

      dir.write('gh.yaml', yaml(undefined));
      expect(await gh.reload()).toMatchObject({ ok: true, removed: ['listener:hub'] });
      await until(() => n2.sockets.size === 0, 5_000, 'n2 stream closed');
      const tree = await gh.tree({});
      expect(find(tree, (n) => n.id === 'hubs')[0]!.children).toEqual([]);
      expect(gh.hubView()).toEqual({ listeners: [] });

      dir.write('gh.yaml', yaml([['n1', n1.url]]));
      expect(await gh.reload()).toMatchObject({ ok: true, added: ['listener:hub'] });
      await n1.waitFor((f, conn) => f.type === 'hello' && conn === 2);
      await until(() => readyAtShard().join() === 'n1', 5_000, 'the new listener knows n1');
    } finally {
      await gh.stop();
    }
  });
});
