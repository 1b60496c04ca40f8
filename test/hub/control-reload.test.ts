import { describe, expect, test } from 'vitest';
import { live } from '../../src/runtime/live.ts';
import { HubNode } from '../helpers/hub-node.ts';
import { until } from '../helpers/daemon.ts';
import { hubListeners, startHubPlane } from './control-fixture.ts';

const ids = (type: string): string[] =>
  live
    .list()
    .filter((a) => a.type === type && a.status !== 'exited')
    .map((a) => a.id)
    .sort();

const request = (gid: string) => ({ type: 'hub-request' as const, node: 'n1', clientId: '0.c1', reqId: `r-${gid}`, gid, frame: JSON.stringify({ type: 'request', id: gid, clientId: '0.c1', userId: 'u1', data: 1 }) });

describe('hub control plane: reload', () => {
  test('nodes added, removed and moved to a new url start and stop their streams; a removed node fails its pending requests at once', async () => {
    await using n1 = await HubNode.start({ answer: () => undefined });
    await using n2 = await HubNode.start();
    await using n1b = await HubNode.start();
    const v1 = hubListeners({ nodes: [['n1', n1.url]], extra: 'requestTimeout: 30s' });
    await using p = await startHubPlane(v1);
    await p.nodeReady('n1');
    expect(ids('node-stream')).toEqual(['node:hub/n1']);
    expect(ids('presence')).toEqual(['presence:hub']);
    expect(ids('hub-requests')).toEqual(['requests:hub']);
    expect(ids('hub')).toEqual(['hub:hub']);

    // Add n2.
    const v2 = hubListeners({ nodes: [['n1', n1.url], ['n2', n2.url]], extra: 'requestTimeout: 30s' });
    await p.hubs.apply(v1, v2);
    await p.nodeReady('n2');
    expect(ids('node-stream')).toEqual(['node:hub/n1', 'node:hub/n2']);
    await p.waitPosted((x) => x.m.type === 'hub-nodes' && x.m.ready.join() === 'n1,n2', 'hub-nodes n1,n2');

    // n1 moves to a new url with a request pending: the request fails at once, the new url is dialed.
    p.from(0, request('g1'));
    await until(() => n1.frames('request').length === 1, 5_000, 'request at n1');
    const mark = p.posted.length;
    const v3 = hubListeners({ nodes: [['n1', n1b.url], ['n2', n2.url]], extra: 'requestTimeout: 30s' });
    await p.hubs.apply(v2, v3);
    expect(p.replies(mark)).toEqual([{ shard: 0, clientId: '0.c1', frame: { type: 'error', id: 'r-g1', code: 'node_unavailable' } }]);
    await p.nodeReady('n1');
    await n1b.waitFor((f) => f.type === 'hello');
    expect(n1.sockets.size).toBe(0);
    p.from(0, request('g2'));
    await until(() => p.replies(mark).length === 2, 5_000, 'answer from the new n1');
    expect(p.replies(mark)[1]!.frame).toEqual({ type: 'response', id: 'r-g2', data: { echo: 1 } });

    // Remove n2: its stream stops, shards learn it.
    const v4 = hubListeners({ nodes: [['n1', n1b.url]], extra: 'requestTimeout: 30s' });
    const mark2 = p.posted.length;
    await p.hubs.apply(v3, v4);
    expect(ids('node-stream')).toEqual(['node:hub/n1']);
    await until(() => n2.sockets.size === 0, 5_000, 'n2 stream closed');
    expect(p.find((x) => x.m.type === 'hub-node-down', mark2).map((x) => x.m)).toContainEqual({ type: 'hub-node-down', listener: 'hub', node: 'n2' });
    expect(p.find((x) => x.m.type === 'hub-nodes', mark2).at(-1)!.m).toEqual({ type: 'hub-nodes', listener: 'hub', ready: ['n1'] });

    // Settings apply without restarting the stream.
    const stream = p.control().stream('n1');
    const v5 = hubListeners({ nodes: [['n1', n1b.url]], extra: 'requestTimeout: 40ms' });
    await p.hubs.apply(v4, v5);
    expect(p.control().stream('n1')).toBe(stream);
    p.from(0, request('g3'));
    await p.settledEmpty();
  });

  test('a removed hub listener stops its whole subtree and fails its pending requests; an added one starts', async () => {
    await using n1 = await HubNode.start({ answer: () => undefined });
    await using n2 = await HubNode.start();
    const one = hubListeners({ nodes: [['n1', n1.url]] });
    await using p = await startHubPlane(one);
    await p.nodeReady('n1');
    p.from(0, { type: 'hub-client-up', clientId: '0.c1', userId: 'u1' });
    p.from(0, request('g1'));
    const mark = p.posted.length;
    const two = hubListeners({ name: 'hub2', nodes: [['n2', n2.url]] });
    await p.hubs.apply(one, two);
    expect(p.replies(mark)).toEqual([{ shard: 0, clientId: '0.c1', frame: { type: 'error', id: 'r-g1', code: 'node_unavailable' } }]);
    expect(p.hubs.control('hub')).toBeUndefined();
    expect(ids('node-stream')).toEqual(['node:hub2/n2']);
    expect(ids('presence')).toEqual(['presence:hub2']);
    expect(ids('hub-requests')).toEqual(['requests:hub2']);
    expect(ids('hub')).toEqual(['hub:hub2']);
    await until(() => n1.sockets.size === 0, 5_000, 'n1 closed');
    await p.nodeReady('n2', 'hub2');
    // Messages for the removed listener are ignored.
    p.from(0, { type: 'hub-client-up', clientId: '0.c2', userId: 'u2' });
    expect(p.hubs.stats()).toEqual({ clients: [{ listener: 'hub2', clients: 0 }], usersOnline: 0 });
    const tree = p.root.tree();
    expect(tree.children.map((c) => c.id)).toEqual(['hubs']);
    expect(tree.children[0]!.children.map((c) => [c.id, c.children.map((x) => x.id)])).toEqual([['hub:hub2', ['presence:hub2', 'requests:hub2', 'node:hub2/n2']]]);
    // describe() exposes the map sizes in /actors.
    expect(tree.children[0]!.children[0]!.children[0]).toMatchObject({ id: 'presence:hub2', type: 'presence', clients: 0, users: 0, inGrace: 0, shards: 0 });
    expect(tree.children[0]!.children[0]!.children[1]).toMatchObject({ id: 'requests:hub2', type: 'hub-requests', pending: 0, byClient: 0, byNode: 0, acks: 0 });
    expect(tree.children[0]!.children[0]!.children[2]).toMatchObject({ id: 'node:hub2/n2', type: 'node-stream', state: 'ready', node: 'n2' });
    p.expectEmpty();
  });

  test('a crashed node stream fails its pending requests, is restarted by hub:NAME and comes back ready on one socket', async () => {
    await using n1 = await HubNode.start({ answer: () => undefined });
    await using p = await startHubPlane(hubListeners({ nodes: [['n1', n1.url]] }));
    await p.nodeReady('n1');
    p.from(0, request('g1'));
    const first = p.control().stream('n1')!;
    const mark = p.posted.length;
    expect(first.crash()).toBe(true);
    // Its pending request failed with it.
    expect(p.replies(mark)).toEqual([{ shard: 0, clientId: '0.c1', frame: { type: 'error', id: 'r-g1', code: 'node_unavailable' } }]);
    await until(() => p.control().stream('n1') && p.control().stream('n1') !== first, 5_000, 'restarted');
    await p.nodeReady('n1');
    expect(p.control().stream('n1')!.restarts).toBe(1);
    await until(() => n1.accepted === 2 && n1.sockets.size === 1, 5_000, 'one socket, the new one');
    p.expectEmpty();
  });
});
