import pino from 'pino';
import { describe, expect, onTestFinished, test } from 'vitest';
import { AccessLog, type AccessEntry } from '../../src/http/access-log.ts';

interface Line {
  level: number;
  msg: string;
  [k: string]: unknown;
}

/** A pino logger writing to a captured stream, and a wait for the lines it wrote (with a deadline). */
function captured(): { log: pino.Logger; lines: Line[]; waitFor(n: number): Promise<Line[]> } {
  const lines: Line[] = [];
  const waiters = new Set<() => void>();
  const log = pino({ level: 'info', base: undefined }, {
    write(s: string) {
      lines.push(JSON.parse(s) as Line);
      for (const w of [...waiters]) w();
    },
  });
  return {
    log,
    lines,
    waitFor(n) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (lines.length < n) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(lines);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`expected ${n} lines, got ${lines.length}`));
        }, 2_000);
        waiters.add(check);
        check();
      });
    },
  };
}

function entry(i: number, extra: Partial<AccessEntry> = {}): AccessEntry {
  return {
    listener: 'web',
    route: 'api',
    method: 'GET',
    path: `/api/items/${i}?q=1`,
    status: 200,
    durationMs: 1.5 + i,
    upstream: 'api',
    backend: '127.0.0.1:9001',
    requestId: `req-${i}`,
    bytesIn: 100 + i,
    bytesOut: 2_000 + i,
    remoteAddress: '127.0.0.1',
    ...extra,
  };
}

function open(log: pino.Logger, sample: number, opts?: ConstructorParameters<typeof AccessLog>[2]): AccessLog {
  const a = new AccessLog(log, sample, opts);
  onTestFinished(() => a.close());
  return a;
}

/** A random source that plays back `values` in order. */
function playback(values: number[]): () => number {
  let i = 0;
  return () => {
    if (i >= values.length) throw new Error('random called more often than expected');
    return values[i++]!;
  };
}

const requestLines = (lines: Line[]): Line[] => lines.filter((l) => l.msg === 'request');

describe('AccessLog', () => {
  test('one line per request, with the entry fields, written after record() returns', async () => {
    const c = captured();
    const a = open(c.log, 1);
    a.record(entry(1));
    a.record(entry(2, { route: '', status: 404, upstream: undefined, backend: undefined }));
    a.record(entry(3, { method: 'POST', status: 502 }));
    // Off the request's path: nothing is written during record().
    expect(c.lines).toHaveLength(0);
    const lines = await c.waitFor(3);
    expect(lines).toHaveLength(3);
    expect(lines[0]).toEqual({ level: 30, time: expect.any(Number), msg: 'request', ...entry(1) });
    expect(lines[1]).toEqual({ level: 30, time: expect.any(Number), msg: 'request', listener: 'web', route: '', method: 'GET', path: '/api/items/2?q=1', status: 404, durationMs: 3.5, requestId: 'req-2', bytesIn: 102, bytesOut: 2_002, remoteAddress: '127.0.0.1' });
    expect(lines[2]).toMatchObject({ msg: 'request', method: 'POST', status: 502, requestId: 'req-3' });
  });

  test('a batch is written at once by one flush; the next records start a new batch', async () => {
    const c = captured();
    const a = open(c.log, 1);
    for (let i = 0; i < 50; i++) a.record(entry(i));
    // The lines arrive together: when the first is written, the whole batch is.
    let seenAtFirst = -1;
    const first = c.waitFor(1).then(() => (seenAtFirst = c.lines.length));
    await c.waitFor(50);
    await first;
    expect(seenAtFirst).toBe(50);
    a.record(entry(50));
    expect(c.lines).toHaveLength(50);
    await c.waitFor(51);
    expect(c.lines.map((l) => l.requestId)).toEqual(Array.from({ length: 51 }, (_, i) => `req-${i}`));
  });

  test('sample 0 logs nothing, 1 logs every request without drawing', () => {
    const none = captured();
    const a = open(none.log, 0);
    for (let i = 0; i < 100; i++) a.record(entry(i));
    a.flush();
    expect(none.lines).toHaveLength(0);

    const all = captured();
    const b = open(all.log, 1, { random: playback([]) });
    for (let i = 0; i < 100; i++) b.record(entry(i));
    b.flush();
    expect(requestLines(all.lines)).toHaveLength(100);
  });

  test('sample 0.5 keeps the requests whose draw is below it', () => {
    const c = captured();
    const a = open(c.log, 0.5, { random: playback([0.1, 0.7, 0.49, 0.5, 0.9, 0.0, 0.99, 0.25]) });
    for (let i = 0; i < 8; i++) a.record(entry(i));
    a.flush();
    expect(c.lines.map((l) => l.requestId)).toEqual(['req-0', 'req-2', 'req-5', 'req-7']);
  });

  test('a full batch drops, counts and says so once per flush; memory stays bounded', async () => {
    const c = captured();
    const a = open(c.log, 1, { maxBatch: 5 });
    for (let i = 0; i < 1_005; i++) a.record(entry(i));
    const lines = await c.waitFor(6);
    expect(requestLines(lines).map((l) => l.requestId)).toEqual(['req-0', 'req-1', 'req-2', 'req-3', 'req-4']);
    const warns = lines.filter((l) => l.level === 40);
    expect(warns).toEqual([expect.objectContaining({ msg: 'access log: entries dropped, the log cannot keep up', dropped: 1_000, maxBatch: 5 })]);
    // The count starts again: the next batch fits, so no warn line.
    a.record(entry(2_000));
    a.record(entry(2_001));
    a.flush();
    expect(c.lines.slice(6).map((l) => [l.msg, l.requestId])).toEqual([
      ['request', 'req-2000'],
      ['request', 'req-2001'],
    ]);
  });

  test('close() writes what is pending at once and leaves nothing scheduled; later records are ignored', () => {
    const c = captured();
    const a = new AccessLog(c.log, 1);
    a.record(entry(1));
    a.record(entry(2));
    a.close();
    // Written synchronously by close(); the leak check fails the file if the immediate were left.
    expect(c.lines.map((l) => l.requestId)).toEqual(['req-1', 'req-2']);
    a.record(entry(3));
    a.flush();
    a.close();
    expect(c.lines).toHaveLength(2);
  });

  test('a sample outside 0..1 or a bad cap is refused with ERR_OUT_OF_RANGE', () => {
    const c = captured();
    for (const sample of [-0.1, 1.5, Number.NaN]) {
      expect(() => new AccessLog(c.log, sample)).toThrow(expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }));
    }
    expect(() => new AccessLog(c.log, 1, { maxBatch: 0 })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
  });
});
