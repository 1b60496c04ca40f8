import { describe, expect, test } from 'vitest';
import { actorEventFilter } from '../../src/admin/sse.ts';
import type { ActorEvent } from '../../src/runtime/events.ts';
import { openSse, startFixture } from './fixture.ts';

const EVENTS: (ActorEvent & { shard?: number })[] = [
  { type: 'state', id: 'probe:app/127.0.0.1:9001', actorType: 'healthProbe', state: 'probing' },
  { type: 'spawned', id: 'conn:1:1', actorType: 'connection', parent: 'listener:web', shard: 1 },
  { type: 'state', id: 'probe:app/127.0.0.1:9001', actorType: 'healthProbe', state: 'waiting' },
  { type: 'down', id: 'shard-1', actorType: 'shard', reason: 'error', error: 'crashed' },
  { type: 'restart', id: 'shard-1', actorType: 'shard', supervisor: 'shards', restarts: 1 },
  { type: 'down', id: 'conn:1:1', actorType: 'connection', reason: 'normal', shard: 1 },
];

/** The ids and kinds of the events a filter keeps, in order. */
const kept = (query: string): string[] => EVENTS.filter(actorEventFilter(new URLSearchParams(query))).map((e) => `${e.type} ${e.id}`);

function parseEvents(text: string): { event: string; data: { id: string } }[] {
  return text.split('\n\n').flatMap((block) => {
    const ev = /^event: (.*)$/m.exec(block);
    const data = /^data: (.*)$/m.exec(block);
    return ev && data ? [{ event: ev[1]!, data: JSON.parse(data[1]!) as { id: string } }] : [];
  });
}

describe('actorEventFilter', () => {
  test('no parameter keeps every event', () => {
    expect(kept('')).toHaveLength(EVENTS.length);
  });

  test('exclude drops actor types; type keeps only the listed ones', () => {
    expect(kept('exclude=healthProbe')).toEqual(['spawned conn:1:1', 'down shard-1', 'restart shard-1', 'down conn:1:1']);
    expect(kept('exclude=healthProbe,connection')).toEqual(['down shard-1', 'restart shard-1']);
    expect(kept('type=healthProbe')).toEqual(['state probe:app/127.0.0.1:9001', 'state probe:app/127.0.0.1:9001']);
    expect(kept('type=shard&type=connection')).toEqual(['spawned conn:1:1', 'down shard-1', 'restart shard-1', 'down conn:1:1']);
    expect(kept('type=shard,connection&exclude=connection')).toEqual(['down shard-1', 'restart shard-1']);
  });

  test('event keeps only the listed kinds, and combines with the type filters', () => {
    expect(kept('event=down,restart')).toEqual(['down shard-1', 'restart shard-1', 'down conn:1:1']);
    expect(kept('event=down&exclude=connection')).toEqual(['down shard-1']);
    expect(kept('event=spawned&type=shard')).toEqual([]);
  });

  test.each([
    ['event=crash', 'event'],
    ['event=down,', 'event'],
    ['type=', 'type'],
    ['exclude=a,,b', 'exclude'],
    [`type=${'x'.repeat(201)}`, 'type'],
    [`exclude=${Array.from({ length: 65 }, (_, i) => `t${i}`).join(',')}`, 'exclude'],
  ])('%s is a 400 bad_query naming %s', (query, param) => {
    expect(() => actorEventFilter(new URLSearchParams(query))).toThrow(expect.objectContaining({ status: 400, code: 'bad_query', extra: expect.objectContaining({ param }) }));
  });
});

describe('GET /actors/events filters', () => {
  test('?exclude=healthProbe streams everything but the probes; ?event=down,restart only incidents', async () => {
    await using f = await startFixture({ debug: true });
    const quiet = await openSse(f.origin, '/actors/events?exclude=healthProbe');
    const incidents = await openSse(f.origin, '/actors/events?event=down,restart');
    const all = await openSse(f.origin, '/actors/events');
    await Promise.all([quiet, incidents, all].map((s) => s.waitFor((t) => t.includes(': connected'))));
    for (const e of EVENTS) f.backend.events.next(e);
    await all.waitFor((t) => parseEvents(t).length === EVENTS.length);
    const text = await quiet.waitFor((t) => parseEvents(t).length === 4);
    await incidents.waitFor((t) => parseEvents(t).length === 3);
    expect(parseEvents(text).map((e) => `${e.event} ${e.data.id}`)).toEqual(['spawned conn:1:1', 'down shard-1', 'restart shard-1', 'down conn:1:1']);
    expect(text).not.toContain('healthProbe');
    expect(parseEvents(incidents.text()).map((e) => `${e.event} ${e.data.id}`)).toEqual(['down shard-1', 'restart shard-1', 'down conn:1:1']);
    for (const s of [quiet, incidents, all]) s.close();
    await expect.poll(() => f.server.sseStreams, { timeout: 2_000 }).toBe(0);
  });

  test('a bad filter is a 400 bad_query before the stream opens', async () => {
    await using f = await startFixture({ debug: true });
    const r = await f.request('GET', '/actors/events?event=crash');
    expect(r.status).toBe(400);
    expect(r.json).toEqual({ error: { code: 'bad_query', message: 'event must list kinds among spawned, state, down, restart' }, param: 'event', unknown: ['crash'] });
    expect(f.server.sseStreams).toBe(0);
    expect(f.backend.events.observed).toBe(false);
  });
});
