import { describe, expect, test } from 'vitest';
import { Subject } from 'rxjs';
import type { TreeNode } from '../../src/runtime/actor.ts';
import type { ActorEvent } from '../../src/runtime/events.ts';
import { countEvents, parseTopQuery, parseWindow, topByBytes } from '../../src/admin/top.ts';
import { startFixture } from './fixture.ts';

function conn(id: string, bytesIn: number, bytesOut: number, peer = '127.0.0.1:40000'): TreeNode {
  return { id, type: 'connection', state: 'open', status: 'running', restarts: 0, children: [], peer, backend: '127.0.0.1:9001', bytesIn, bytesOut };
}

function tree(...conns: TreeNode[]): TreeNode {
  const listener: TreeNode = { id: 'listener:web', type: 'listener', state: 'listening', status: 'running', restarts: 0, children: conns, listen: '127.0.0.1:8080' };
  return { id: 'root', type: 'supervisor', state: 'running', status: 'running', restarts: 0, children: [listener] };
}

describe('parseWindow and parseTopQuery', () => {
  test.each([
    ['5s', 5_000],
    ['500ms', 500],
    ['1m', 60_000],
    ['2', 2_000],
    ['1.5s', 1_500],
    ['100ms', 100],
  ])('%s is %d ms', (raw, ms) => {
    expect(parseWindow(raw)).toBe(ms);
  });

  test.each(['', '0s', '99ms', '61s', '2m', '-1s', '5h', 's', '1e3'])('%j is a 400 bad_query naming window', (raw) => {
    expect(() => parseWindow(raw)).toThrow(expect.objectContaining({ status: 400, code: 'bad_query', extra: { param: 'window' } }));
  });

  test('defaults: by bytes, a 5 s window, 10 rows', () => {
    expect(parseTopQuery(new URLSearchParams(''))).toEqual({ by: 'bytes', windowMs: 5_000, limit: 10 });
    expect(parseTopQuery(new URLSearchParams('by=events&window=250ms&limit=3'))).toEqual({ by: 'events', windowMs: 250, limit: 3 });
  });

  test.each([
    ['by=cpu', 'by'],
    ['by=bytes&by=events', 'by'],
    ['window=1s&window=2s', 'window'],
    ['limit=-1', 'limit'],
    ['limit=1001', 'limit'],
  ])('%s is a 400 bad_query naming %s', (query, param) => {
    expect(() => parseTopQuery(new URLSearchParams(query))).toThrow(expect.objectContaining({ status: 400, code: 'bad_query', extra: expect.objectContaining({ param }) }));
  });
});

describe('topByBytes', () => {
  test('ranks by bytes moved between the samples, both ways; idle and ended actors are left out', () => {
    const before = tree(conn('conn:0:1', 100, 100), conn('conn:0:2', 5_000, 5_000), conn('conn:1:3', 10, 10), conn('conn:1:4', 50, 0));
    // conn:0:2 moved the most in total but little in the window; conn:1:4 ended; conn:1:5 is new.
    const after = tree(conn('conn:0:1', 100, 100), conn('conn:0:2', 5_100, 5_000), conn('conn:1:3', 9_010, 1_010, '10.0.0.9:5555'), conn('conn:1:5', 300, 0));
    expect(topByBytes(before, after, 10)).toEqual([
      { id: 'conn:1:3', type: 'connection', state: 'open', bytes: 10_000, bytesIn: 9_000, bytesOut: 1_000, peer: '10.0.0.9:5555', backend: '127.0.0.1:9001' },
      { id: 'conn:1:5', type: 'connection', state: 'open', bytes: 300, bytesIn: 300, bytesOut: 0, peer: '127.0.0.1:40000', backend: '127.0.0.1:9001' },
      { id: 'conn:0:2', type: 'connection', state: 'open', bytes: 100, bytesIn: 100, bytesOut: 0, peer: '127.0.0.1:40000', backend: '127.0.0.1:9001' },
    ]);
    expect(topByBytes(before, after, 1).map((r) => r.id)).toEqual(['conn:1:3']);
    expect(topByBytes(before, before, 10)).toEqual([]);
  });

  test('ties are ordered by id', () => {
    expect(topByBytes(tree(), tree(conn('b', 5, 0), conn('a', 0, 5)), 10).map((r) => r.id)).toEqual(['a', 'b']);
  });
});

describe('countEvents', () => {
  test('counts each actor\'s events until the signal aborts, then unsubscribes', async () => {
    const events = new Subject<ActorEvent>();
    const window = new AbortController();
    const counted = countEvents(events, window.signal, 2);
    for (let i = 0; i < 4; i++) events.next({ type: 'state', id: 'probe:a', actorType: 'healthProbe', state: i % 2 ? 'waiting' : 'probing' });
    events.next({ type: 'down', id: 'shard-1', actorType: 'shard', reason: 'error' });
    events.next({ type: 'restart', id: 'shard-1', actorType: 'shard', supervisor: 'shards', restarts: 1 });
    events.next({ type: 'spawned', id: 'conn:0:1', actorType: 'connection' });
    window.abort();
    expect(await counted).toEqual([
      { id: 'probe:a', type: 'healthProbe', events: 4, state: 'waiting' },
      { id: 'shard-1', type: 'shard', events: 2 },
    ]);
    expect(events.observed).toBe(false);
  });
});

describe('GET /actors/top', () => {
  test('by=bytes samples the tree twice, a window apart, and ranks the difference', async () => {
    await using f = await startFixture();
    f.backend.treeRoot = tree(conn('conn:0:1', 0, 0), conn('conn:0:2', 0, 0));
    const started = performance.now();
    const answer = f.request('GET', '/actors/top?by=bytes&window=300ms&limit=5');
    await expect.poll(() => f.backend.treeCalls.length, { timeout: 2_000 }).toBe(1);
    f.backend.treeRoot = tree(conn('conn:0:1', 10, 20), conn('conn:0:2', 4_000, 4_000, '10.1.1.1:1234'));
    const r = await answer;
    expect(performance.now() - started).toBeGreaterThanOrEqual(300);
    expect(r.status).toBe(200);
    expect(r.json).toEqual({
      by: 'bytes',
      windowMs: 300,
      limit: 5,
      rows: [
        { id: 'conn:0:2', type: 'connection', state: 'open', bytes: 8_000, bytesIn: 4_000, bytesOut: 4_000, peer: '10.1.1.1:1234', backend: '127.0.0.1:9001' },
        { id: 'conn:0:1', type: 'connection', state: 'open', bytes: 30, bytesIn: 10, bytesOut: 20, peer: '127.0.0.1:40000', backend: '127.0.0.1:9001' },
      ],
    });
    // Both samples are of the whole tree: no depth or limit cuts a connection out.
    expect(f.backend.treeCalls).toEqual([{}, {}]);
  });

  test('by=events counts the event stream during the window (debug mode)', async () => {
    await using f = await startFixture({ debug: true });
    const answer = f.request('GET', '/actors/top?by=events&window=400ms');
    await expect.poll(() => f.backend.events.observed, { timeout: 2_000 }).toBe(true);
    for (let i = 0; i < 3; i++) f.backend.events.next({ type: 'state', id: 'conn:0:9', actorType: 'connection', state: 'open' });
    f.backend.events.next({ type: 'down', id: 'shard-0', actorType: 'shard', reason: 'error' });
    const r = await answer;
    expect(r.json).toEqual({ by: 'events', windowMs: 400, limit: 10, rows: [{ id: 'conn:0:9', type: 'connection', state: 'open', events: 3 }, { id: 'shard-0', type: 'shard', events: 1 }] });
    expect(f.backend.events.observed).toBe(false);
  });

  test('by=events outside debug mode is 404 debug_disabled; a bad query is 400', async () => {
    await using f = await startFixture();
    const r = await f.request('GET', '/actors/top?by=events');
    expect([r.status, r.json.error.code]).toEqual([404, 'debug_disabled']);
    const bad = await f.request('GET', '/actors/top?window=10m');
    expect([bad.status, bad.json.error.code, bad.json.param]).toEqual([400, 'bad_query', 'window']);
  });

  test('a client that leaves during the window ends it: no timer or subscription is left', async () => {
    await using f = await startFixture({ debug: true });
    const ctl = new AbortController();
    const gone = fetch(`${f.origin}/actors/top?by=events&window=60s`, { signal: ctl.signal }).catch((err: Error) => err.name);
    await expect.poll(() => f.backend.events.observed, { timeout: 2_000 }).toBe(true);
    ctl.abort();
    expect(await gone).toBe('AbortError');
    await expect.poll(() => f.backend.events.observed, { timeout: 2_000 }).toBe(false);
    // The server closes at once: nothing is in flight any more.
    const t0 = performance.now();
    await f.server.close();
    expect(performance.now() - t0).toBeLessThan(1_000);
  });
});

describe('GET /info', () => {
  test('version, uptime, debug mode, and the backend\'s config file and listeners', async () => {
    await using f = await startFixture({ debug: true });
    const r = await f.request('GET', '/info');
    expect(r.status).toBe(200);
    expect(r.json).toEqual({
      version: expect.stringMatching(/^\d+\.\d+\.\d+/),
      node: process.version,
      pid: process.pid,
      startedAt: expect.any(String),
      uptimeSeconds: expect.any(Number),
      debug: true,
      configFile: '/etc/gatehouse/gatehouse.yaml',
      shards: 2,
      listeners: [{ name: 'web', protocol: 'tcp', listen: '127.0.0.1:0' }],
    });
    expect(Date.parse(r.json.startedAt)).toBeLessThanOrEqual(Date.now());
  });
});
