import { describe, expect, test } from 'vitest';
import { openSse, startFixture } from './fixture.ts';

function parseEvents(text: string): { event: string; data: unknown }[] {
  const out: { event: string; data: unknown }[] = [];
  for (const block of text.split('\n\n')) {
    const ev = /^event: (.*)$/m.exec(block);
    const data = /^data: (.*)$/m.exec(block);
    if (ev && data) out.push({ event: ev[1]!, data: JSON.parse(data[1]!) });
  }
  return out;
}

describe('GET /actors/events', () => {
  test('is 404 outside debug mode, telling how to enable it', async () => {
    await using f = await startFixture();
    const r = await f.request('GET', '/actors/events');
    expect(r.status).toBe(404);
    expect(r.json.error.code).toBe('debug_disabled');
    expect(r.json.error.message).toContain('--debug');
    expect(f.backend.events.observed).toBe(false);
  });

  test('streams each actor event as `event: <type>` with JSON data', async () => {
    await using f = await startFixture({ debug: true });
    const sse = await openSse(f.origin, '/actors/events');
    expect(sse.status).toBe(200);
    expect(sse.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    await sse.waitFor((t) => t.includes(': connected'));

    f.backend.events.next({ type: 'spawned', id: 'conn:1:1', actorType: 'connection', parent: 'listener:web', shard: 1 });
    f.backend.events.next({ type: 'state', id: 'conn:1:1', actorType: 'connection', state: 'proxying' });
    f.backend.events.next({ type: 'down', id: 'conn:1:1', actorType: 'connection', reason: 'normal' });
    f.backend.events.next({ type: 'restart', id: 'health:a:2', actorType: 'healthProbe', supervisor: 'upstream:app', restarts: 2 });
    const text = await sse.waitFor((t) => parseEvents(t).length === 4);
    expect(text).toContain('event: spawned\ndata: {"type":"spawned",');
    expect(parseEvents(text)).toEqual([
      { event: 'spawned', data: { type: 'spawned', id: 'conn:1:1', actorType: 'connection', parent: 'listener:web', shard: 1 } },
      { event: 'state', data: { type: 'state', id: 'conn:1:1', actorType: 'connection', state: 'proxying' } },
      { event: 'down', data: { type: 'down', id: 'conn:1:1', actorType: 'connection', reason: 'normal' } },
      { event: 'restart', data: { type: 'restart', id: 'health:a:2', actorType: 'healthProbe', supervisor: 'upstream:app', restarts: 2 } },
    ]);
    sse.close();
  });

  test('sends comment heartbeats', async () => {
    await using f = await startFixture({ debug: true, sseHeartbeatMs: 10 });
    const sse = await openSse(f.origin, '/actors/events');
    await sse.waitFor((t) => t.split(': heartbeat\n\n').length > 2);
    sse.close();
  });

  test('unsubscribes and stops its heartbeat when the client goes away', async () => {
    await using f = await startFixture({ debug: true, sseHeartbeatMs: 10 });
    const timersBefore = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const a = await openSse(f.origin, '/actors/events');
    const b = await openSse(f.origin, '/actors/events');
    await Promise.all([a.waitFor((t) => t.includes(': connected')), b.waitFor((t) => t.includes(': connected'))]);
    expect(f.server.sseStreams).toBe(2);
    expect(f.backend.events.observed).toBe(true);

    a.close();
    await expect.poll(() => f.server.sseStreams, { timeout: 2_000 }).toBe(1);
    expect(f.backend.events.observed).toBe(true);
    b.close();
    await expect.poll(() => f.server.sseStreams, { timeout: 2_000 }).toBe(0);
    expect(f.backend.events.observed).toBe(false);
    // Each stream's heartbeat interval is cleared with its subscription.
    expect(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length).toBeLessThanOrEqual(timersBefore);
  });

  test('an open stream is ended by server close()', async () => {
    await using f = await startFixture({ debug: true });
    const sse = await openSse(f.origin, '/actors/events');
    await sse.waitFor((t) => t.includes(': connected'));
    await f.server.close();
    await sse.ended;
    expect(f.server.sseStreams).toBe(0);
    expect(f.backend.events.observed).toBe(false);
  });

  test('a completed event source ends the stream', async () => {
    await using f = await startFixture({ debug: true });
    const sse = await openSse(f.origin, '/actors/events');
    await sse.waitFor((t) => t.includes(': connected'));
    f.backend.events.complete();
    await sse.ended;
    await expect.poll(() => f.server.sseStreams, { timeout: 2_000 }).toBe(0);
  });

  test('requires the bearer token when one is set', async () => {
    await using f = await startFixture({ debug: true, token: 't0k' });
    const denied = await openSse(f.origin, '/actors/events');
    expect(denied.status).toBe(401);
    await denied.ended;
    const sse = await openSse(f.origin, '/actors/events', { authorization: 'Bearer t0k' });
    expect(sse.status).toBe(200);
    await sse.waitFor((t) => t.includes(': connected'));
    sse.close();
  });
});
