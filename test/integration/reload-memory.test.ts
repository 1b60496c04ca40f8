/**
 * Reloads leave nothing behind (issue 13: the RSS after 1,000 reloads against after one). A
 * daemon runs in this process and switches between two configs 200 times; what is alive after
 * the reloads (live objects of the actor classes, found on the heap after a full GC, the actor
 * tree, the state table's rows, the process's handles and listeners) must be what was alive
 * before them, at the same config. At `workers: 0` the shard runs in this thread too, so its
 * objects are on the same heap; at `workers: 1` the main thread talks to a shard thread.
 * The RSS itself is measured by `npm run bench -- --suite reload` (docs/benchmarks.md).
 */
import { once } from 'node:events';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import v8 from 'node:v8';
import pino from 'pino';
import { Actor as XstateActor } from 'xstate';
import { describe, expect, test } from 'vitest';
import { Gatehouse } from '../../src/daemon/gatehouse.ts';
import { loadConfigFile } from '../../src/config/load.ts';
import { Actor } from '../../src/runtime/actor.ts';
import { Registry } from '../../src/runtime/registry.ts';
import { live } from '../../src/runtime/live.ts';
import type { TreeNode } from '../../src/runtime/actor.ts';
import { tempDir } from '../helpers/daemon.ts';

const RELOADS = 200;

/** A backend that answers every request with 200 and keeps the connection. */
async function backend(): Promise<net.Server & AsyncDisposable> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('data', () => s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'));
    s.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return Object.assign(server, {
    async [Symbol.asyncDispose]() {
      server.close();
      for (const s of sockets) s.destroy();
      await once(server, 'close');
    },
  });
}

/** Config A: one backend, one route. B: a second backend, a second route, another header value (as the bench's). */
function config(v: 'A' | 'B', workers: number, b1: number, b2: number): string {
  return [
    'admin: { listen: "127.0.0.1:0" }',
    `runtime: { workers: ${workers}, shutdownTimeout: 5s }`,
    'log: { level: silent }',
    'upstreams:',
    `  - { name: up, backends: [ "127.0.0.1:${b1}"${v === 'B' ? `, "127.0.0.1:${b2}"` : ''} ], healthCheck: { type: tcp, interval: 60s } }`,
    'listeners:',
    '  - name: web',
    '    protocol: http',
    '    listen: "127.0.0.1:0"',
    '    routes:',
    `      - { name: all, match: { pathPrefix: / }, upstream: up, headers: { request: { set: { x-config: "${v}" } } } }`,
    ...(v === 'B' ? ['      - { name: extra, match: { pathPrefix: /extra }, upstream: up }'] : []),
    '',
  ].join('\n');
}

function countNodes(n: TreeNode): number {
  return 1 + (n.children ?? []).reduce((a, c) => a + countNodes(c), 0);
}

/** What a leak per reload would grow. `v8.queryObjects` runs a full GC first. */
async function census(gh: Gatehouse): Promise<Record<string, unknown>> {
  const resources: Record<string, number> = {};
  // Handles and timers; requests in flight (a file read, a lookup) come and go.
  for (const r of process.getActiveResourcesInfo()) if (!/Req/.test(r)) resources[r] = (resources[r] ?? 0) + 1;
  const state = gh.stateView();
  return {
    heap: {
      actors: v8.queryObjects(Actor, { format: 'count' }),
      xstateActors: v8.queryObjects(XstateActor, { format: 'count' }),
      registries: v8.queryObjects(Registry, { format: 'count' }),
    },
    live: live.countsByType(),
    actorCounts: await gh.actorCounts(),
    treeNodes: countNodes(await gh.tree({})),
    stateRows: { listeners: state.listeners.length, backends: state.backends.length },
    httpRoutes: (await gh.httpStats()).routes.length,
    resources,
    processListeners: Object.fromEntries(process.eventNames().map((e) => [String(e), process.listenerCount(e)])),
  };
}

describe('reload leaves nothing behind', () => {
  test.each([0, 1])(`${RELOADS} reloads at workers: %i: the same objects, actors, rows and handles as before them`, async (workers) => {
    await using b1 = await backend();
    await using b2 = await backend();
    const [p1, p2] = [b1, b2].map((b) => (b.address() as net.AddressInfo).port) as [number, number];
    using dir = tempDir();
    const file = dir.write('gh.yaml', config('A', workers, p1, p2));
    await using gh = await Gatehouse.start({ config: await loadConfigFile(file), configFile: file, log: pino({ level: 'silent' }) });
    let version: 'A' | 'B' = 'A';
    const reload = async (): Promise<void> => {
      version = version === 'A' ? 'B' : 'A';
      writeFileSync(file, config(version, workers, p1, p2));
      const r = await gh.reload();
      expect(r).toMatchObject({ ok: true, changed: ['upstream:up', 'listener:web'] });
    };

    // Warm up (pools, lazily built parts), ending on config A like the measured run.
    for (let i = 0; i < 20; i++) await reload();
    const before = await census(gh);
    for (let i = 0; i < RELOADS; i++) await reload();
    expect(version).toBe('A');

    // Health probes and shard requests come and go: poll until the census settles, 5 s at most.
    let after = await census(gh);
    const deadline = Date.now() + 5_000;
    while (JSON.stringify(after) !== JSON.stringify(before) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      after = await census(gh);
    }
    expect(after).toEqual(before);
  });
});
