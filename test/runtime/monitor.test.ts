import { afterEach, describe, expect, test, vi } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import diagnostics from 'node:diagnostics_channel';
import { firstValueFrom, lastValueFrom, toArray } from 'rxjs';
import { MachineActor } from '../../src/runtime/machine-actor.ts';
import { monitorErrorChannel, type Down } from '../../src/runtime/actor.ts';
import { TestActor, expectNoLiveActors, machines, type MachineKind } from './fixtures.ts';

const started: MachineActor[] = [];
function spawn(kind: MachineKind = 'clean', id = `m${started.length}`): MachineActor {
  const a = new MachineActor({ id, type: 'worker', logic: machines[kind] });
  started.push(a);
  return a.start();
}

afterEach(async () => {
  for (const a of started.splice(0)) await a.shutdown('brutal');
  expectNoLiveActors();
});

/** Watches with `n` monitors and returns every DOWN each one received. */
function watch(a: MachineActor | TestActor, n = 2): Down[][] {
  const got: Down[][] = [];
  for (let i = 0; i < n; i++) {
    const mine: Down[] = [];
    got.push(mine);
    a.monitor((d) => mine.push(d));
  }
  return got;
}

function expectOneDown(got: Down[][], id: string, reason: Down['reason']): void {
  const refs = new Set<number>();
  for (const downs of got) {
    expect(downs).toHaveLength(1);
    expect(downs[0]).toMatchObject({ type: 'DOWN', id, reason });
    expect(typeof downs[0]!.ref).toBe('number');
    refs.add(downs[0]!.ref);
  }
  // Each monitor has its own ref.
  expect(refs.size).toBe(got.length);
}

describe('monitor', () => {
  test('one DOWN shutdown per monitor when a machine is asked to stop and reaches its final state', async () => {
    const a = spawn('clean');
    const got = watch(a, 3);
    const down = await a.shutdown(1_000);
    expect(down.reason).toBe('shutdown');
    expectOneDown(got, a.id, 'shutdown');
    await a.shutdown();
    expectOneDown(got, a.id, 'shutdown');
  });

  test('one DOWN shutdown when a machine that cannot take gh.shutdown is stopped at once', async () => {
    const a = spawn('plain');
    const got = watch(a);
    await a.shutdown(1_000);
    expectOneDown(got, a.id, 'shutdown');
  });

  test('one DOWN normal when the machine reaches a final state by itself', async () => {
    const a = spawn('clean');
    const got = watch(a);
    a.send({ type: 'finish' });
    expectOneDown(got, a.id, 'normal');
    expect((await a.exited()).reason).toBe('normal');
  });

  test('one DOWN error, carrying the error, when an action throws', async () => {
    const a = spawn('clean');
    const got = watch(a);
    a.send({ type: 'crash' });
    expectOneDown(got, a.id, 'error');
    expect((got[0]![0]!.error as Error).message).toBe('boom');
    expect(a.status).toBe('exited');
    // Sends after the crash are ignored, not warned about by xstate.
    a.send({ type: 'finish' });
    expectOneDown(got, a.id, 'error');
  });

  test('one DOWN killed for a kill, and for a shutdown that overran its time', async () => {
    const a = spawn('clean');
    const gotA = watch(a);
    a.kill();
    a.kill();
    expectOneDown(gotA, a.id, 'killed');

    const b = spawn('stubborn');
    const gotB = watch(b);
    const down = await b.shutdown(20);
    expect(down.reason).toBe('killed');
    expect(b.state).toBe('draining');
    expectOneDown(gotB, b.id, 'killed');
  });

  test("'brutal' kills an actor whose graceful shutdown is still pending", async () => {
    const a = spawn('stubborn');
    const got = watch(a);
    const graceful = a.shutdown('infinity');
    expect(a.status).toBe('stopping');
    const down = await a.shutdown('brutal');
    expect(down.reason).toBe('killed');
    expect((await graceful).reason).toBe('killed');
    expectOneDown(got, a.id, 'killed');
  });

  test('a machine that fails in its initial entry action exits with error at start', async () => {
    const a = spawn('badInit');
    expect(a.status).toBe('exited');
    expect(a.exitReason).toBe('error');
    const d = await new Promise<Down>((r) => a.monitor(r));
    expect(d.reason).toBe('noproc');
  });

  test("monitoring a dead actor gives one DOWN 'noproc', on a microtask", async () => {
    const a = spawn('clean');
    await a.shutdown();
    const got: Down[] = [];
    a.monitor((d) => got.push(d));
    expect(got).toEqual([]);
    await Promise.resolve();
    expect(got).toEqual([expect.objectContaining({ type: 'DOWN', id: a.id, reason: 'noproc' })]);
    // exited() still tells the real reason.
    expect((await a.exited()).reason).toBe('shutdown');
  });

  test('demonitor before the noproc is delivered drops it', async () => {
    const a = spawn('clean');
    a.kill();
    const fn = vi.fn();
    const off = a.monitor(fn);
    off();
    await Promise.resolve();
    await Promise.resolve();
    expect(fn).not.toHaveBeenCalled();
  });

  test('demonitor removes exactly that monitor, also the first one after others were added', async () => {
    const a = spawn('clean');
    const first = vi.fn();
    const second = vi.fn();
    const third = vi.fn();
    const offFirst = a.monitor(first);
    const offSecond = a.monitor(second);
    a.monitor(third);
    offFirst();
    offSecond();
    offSecond();
    a.send({ type: 'crash' });
    expect(first).not.toHaveBeenCalled();
    expect(second).not.toHaveBeenCalled();
    expect(third).toHaveBeenCalledOnce();
  });

  test('the same function monitoring twice gets two DOWNs, and demonitoring one leaves the other', async () => {
    const a = spawn('clean');
    const fn = vi.fn();
    const off = a.monitor(fn);
    a.monitor(fn);
    a.monitor(fn);
    off();
    await a.shutdown();
    expect(fn).toHaveBeenCalledTimes(2);
  });

  test('a throwing monitor does not keep the DOWN from the others, and is reported', async () => {
    const a = spawn('clean');
    const reported: unknown[] = [];
    const onReport = (m: unknown) => reported.push(m);
    diagnostics.subscribe(monitorErrorChannel.name, onReport);
    try {
      const before = vi.fn();
      const after = vi.fn();
      a.monitor(before);
      a.monitor(() => {
        throw new Error('watcher bug');
      });
      a.monitor(after);
      a.send({ type: 'crash' });
      expect(before).toHaveBeenCalledOnce();
      expect(after).toHaveBeenCalledOnce();
      expect(reported).toEqual([expect.objectContaining({ id: a.id, error: expect.objectContaining({ message: 'watcher bug' }) })]);
      expect((await a.exited()).reason).toBe('error');
    } finally {
      diagnostics.unsubscribe(monitorErrorChannel.name, onReport);
    }
  });

  test('works on a plain Actor subclass too', async () => {
    const t = new TestActor('t1');
    const got = watch(t);
    t.crash();
    expectOneDown(got, 't1', 'error');
    expect(t.activeMonitors).toBe(0);
  });
});

describe('down$', () => {
  test('emits the DOWN once and completes', async () => {
    const a = spawn('clean');
    const all = lastValueFrom(a.down$().pipe(toArray()));
    a.send({ type: 'finish' });
    const downs = await all;
    expect(downs).toEqual([expect.objectContaining({ type: 'DOWN', id: a.id, reason: 'normal' })]);
  });

  test("emits 'noproc' once and completes for a dead actor", async () => {
    const a = spawn('clean');
    a.kill();
    expect(await lastValueFrom(a.down$().pipe(toArray()))).toEqual([expect.objectContaining({ reason: 'noproc' })]);
  });

  test('unsubscribing demonitors', async () => {
    const t = new TestActor('t2');
    const next = vi.fn();
    const sub = t.down$().subscribe(next);
    expect(t.activeMonitors).toBe(1);
    sub.unsubscribe();
    expect(t.activeMonitors).toBe(0);
    t.finish();
    expect(next).not.toHaveBeenCalled();
  });

  test('each subscription is its own monitor', async () => {
    const a = spawn('clean');
    const one = firstValueFrom(a.down$());
    const two = firstValueFrom(a.down$());
    await a.shutdown();
    const [d1, d2] = await Promise.all([one, two]);
    expect(d1.reason).toBe('shutdown');
    expect(d2.reason).toBe('shutdown');
    expect(d1.ref).not.toBe(d2.ref);
  });
});

describe('MachineActor errors never become unhandled errors', () => {
  test('a crash with no watcher at all stays a DOWN (the process keeps running)', async () => {
    const a = spawn('clean');
    a.send({ type: 'crash' });
    const b = spawn('badInit');
    expect(b.exitReason).toBe('error');
    // xstate rethrows unobserved errors in a setTimeout(0): let every such timer fire. Vitest fails
    // the run on any uncaught exception.
    await new Promise<void>((r) => setTimeout(r, 0));
    await new Promise<void>((r) => setImmediate(r));
    expect(a.exitReason).toBe('error');
  });

  test('in a separate process: a bare xstate actor kills the process, a MachineActor does not', async () => {
    const run = promisify(execFile);
    const machineActor = fileURLToPath(new URL('../../src/runtime/machine-actor.ts', import.meta.url));
    const fixtures = fileURLToPath(new URL('./fixtures.ts', import.meta.url));
    const script = (body: string) => `
      import { createActor } from 'xstate';
      import { MachineActor } from ${JSON.stringify(machineActor)};
      import { cleanMachine, badInitMachine } from ${JSON.stringify(fixtures)};
      ${body}
      // xstate rethrows in a setTimeout(0) queued before this one.
      await new Promise((r) => setTimeout(r, 0));
      console.log('survived');
    `;
    const opts = { cwd: fileURLToPath(new URL('../..', import.meta.url)), timeout: 20_000 };
    const ours = await run(process.execPath, ['--input-type=module', '-e', script(`
      const a = new MachineActor({ id: 'a', type: 'worker', logic: cleanMachine }).start();
      a.send({ type: 'crash' });
      new MachineActor({ id: 'b', type: 'worker', logic: badInitMachine }).start();
      if (a.exitReason !== 'error') process.exit(3);
    `)], opts);
    expect(ours.stdout).toContain('survived');

    const bare = run(process.execPath, ['--input-type=module', '-e', script(`
      const a = createActor(cleanMachine).start();
      a.send({ type: 'crash' });
    `)], opts);
    // The control: without an error observer xstate's rethrow kills the process.
    await expect(bare).rejects.toMatchObject({ code: 1, stderr: expect.stringContaining('boom') });
  });
});
