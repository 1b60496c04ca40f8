import { describe, expect, test, vi } from 'vitest';
import { Supervisor, machineChild, supervisorChild, type ChildSpec, type RestartType, type Strategy, type SupervisorSpec } from '../../src/supervisors/supervisor.ts';
import { createMachine } from 'xstate';
import { MachineActor } from '../../src/runtime/machine-actor.ts';
import { ManualClock } from '../../src/runtime/clock.ts';
import { live } from '../../src/runtime/live.ts';
import type { Down, TreeNode } from '../../src/runtime/actor.ts';
import { captureLog, cleanMachine, recorder, supervisorsPerTest } from '../runtime/fixtures.ts';

const { startSup, track } = supervisorsPerTest();

function worker(sup: Supervisor, id: string): MachineActor {
  const a = sup.child(id);
  if (!(a instanceof MachineActor)) throw new Error(`no live child ${id}`);
  return a;
}

function downOf(sup: Supervisor): Promise<Down> {
  return new Promise((r) => sup.monitor(r));
}

function node(tree: TreeNode, id: string): TreeNode | undefined {
  return tree.children.find((c) => c.id === id);
}

type ExitKind = 'normal' | 'shutdown' | 'crash';

/** Ends child `id` the way `kind` says, as the child itself (not through the supervisor). */
async function endChild(sup: Supervisor, id: string, kind: ExitKind): Promise<void> {
  const a = worker(sup, id);
  if (kind === 'normal') a.send({ type: 'finish' });
  else if (kind === 'crash') a.send({ type: 'crash' });
  else await a.shutdown(1_000);
}

const REASON: Record<ExitKind, Down['reason']> = { normal: 'normal', shutdown: 'shutdown', crash: 'error' };

/** Whether OTP restarts a child of this type after this exit. */
function restarts(type: RestartType, kind: ExitKind): boolean {
  return type === 'permanent' || (type === 'transient' && kind === 'crash');
}

/** What follows the DOWN of `b` among [a, b, c] when it is restarted under `strategy`. */
const RESTART_EVENTS: Record<Strategy, string[]> = {
  one_for_one: ['start:b'],
  // Siblings stop in reverse start order, then everything starts in order.
  one_for_all: ['down:c:shutdown', 'down:a:shutdown', 'start:a', 'start:b', 'start:c'],
  rest_for_one: ['down:c:shutdown', 'start:b', 'start:c'],
};

describe('Supervisor: strategy x restart type x exit', () => {
  const strategies: Strategy[] = ['one_for_one', 'one_for_all', 'rest_for_one'];
  const types: RestartType[] = ['permanent', 'transient', 'temporary'];
  const kinds: ExitKind[] = ['normal', 'shutdown', 'crash'];
  const cases = strategies.flatMap((s) => types.flatMap((t) => kinds.map((k) => [s, t, k] as const)));

  test.each(cases)('%s, %s child, %s exit', async (strategy, type, kind) => {
    const { log, lines } = captureLog();
    const rec = recorder();
    const sup = await startSup(
      { id: 'sup', strategy, maxRestarts: 10, children: [rec.child('a'), rec.child('b', { restart: type }), rec.child('c')] },
      { log },
    );
    expect(rec.events).toEqual(['start:a', 'start:b', 'start:c']);
    const before = { a: sup.child('a'), c: sup.child('c') };
    rec.events.length = 0;

    await endChild(sup, 'b', kind);
    await sup.settled();

    const restarted = restarts(type, kind);
    expect(rec.events).toEqual([`down:b:${REASON[kind]}`, ...(restarted ? RESTART_EVENTS[strategy] : [])]);
    expect(sup.status).toBe('running');
    expect(sup.state).toBe('running');
    // Every child is running again, or b is gone (not restarted), and the others untouched.
    const ids = sup.whichChildren().map((c) => c.id);
    expect(ids).toEqual(type === 'temporary' ? ['a', 'c'] : ['a', 'b', 'c']);
    if (restarted) {
      expect(worker(sup, 'b').status).toBe('running');
      expect(worker(sup, 'b').restarts).toBe(1);
      expect(sup.child('a') === before.a).toBe(strategy !== 'one_for_all');
      expect(sup.child('c') === before.c).toBe(strategy === 'one_for_one');
    } else {
      expect(sup.child('b')).toBeUndefined();
      expect(sup.child('a')).toBe(before.a);
      expect(sup.child('c')).toBe(before.c);
    }
    // Only an abnormal exit is reported (OTP child_terminated).
    const reports = lines.filter((l) => l.msg === 'supervisor report' && l.errorContext === 'child_terminated');
    expect(reports).toEqual(kind === 'crash' ? [expect.objectContaining({ supervisor: 'sup', offender: 'b', reason: 'error' })] : []);
  });
});

describe('Supervisor: start and stop order', () => {
  test('children start in order and stop in reverse order on shutdown', async () => {
    const rec = recorder();
    const sup = await startSup({ id: 'sup', children: ['a', 'b', 'c', 'd'].map((id) => rec.child(id)) });
    const down = downOf(sup);
    expect(sup.whichChildren().map((c) => c.id)).toEqual(['a', 'b', 'c', 'd']);
    expect((await sup.shutdown('infinity')).reason).toBe('shutdown');
    expect((await down).reason).toBe('shutdown');
    expect(rec.events).toEqual([
      'start:a', 'start:b', 'start:c', 'start:d',
      'down:d:shutdown', 'down:c:shutdown', 'down:b:shutdown', 'down:a:shutdown',
    ]);
    expect(sup.state).toBe('stopped');
    expect(sup.children()).toEqual([]);
  });

  test('each child is stopped only after the one after it has exited', async () => {
    const rec = recorder();
    // c takes gh.shutdown but never finishes: it is killed after 30 ms, and only then b is asked.
    const sup = await startSup({ id: 'sup', children: [rec.child('a'), rec.child('b'), rec.child('c', { kind: 'stubborn', shutdown: 30 })] });
    await sup.shutdown('infinity');
    expect(rec.events.slice(3)).toEqual(['down:c:killed', 'down:b:shutdown', 'down:a:shutdown']);
  });

  test('a child that ignores shutdown is killed after its timeout and the supervisor reports it', async () => {
    const { log, lines } = captureLog();
    const rec = recorder();
    const sup = await startSup({ id: 'sup', children: [rec.child('a'), rec.child('slow', { kind: 'stubborn', shutdown: 25 })] }, { log });
    const slow = worker(sup, 'slow');
    const slowDown = new Promise<Down>((r) => slow.monitor(r));
    await sup.shutdown('infinity');
    expect(slow.state).toBe('draining');
    expect(await slowDown).toMatchObject({ type: 'DOWN', id: 'slow', reason: 'killed' });
    expect(lines).toContainEqual(
      expect.objectContaining({ msg: 'supervisor report', supervisor: 'sup', errorContext: 'shutdown_error', reason: 'killed', offender: 'slow', shutdownMs: 25 }),
    );
    expect(rec.events.slice(2)).toEqual(['down:slow:killed', 'down:a:shutdown']);
  });

  test("'brutal' kills at once, without asking and without a report", async () => {
    const { log, lines } = captureLog();
    const rec = recorder();
    const sup = await startSup({ id: 'sup', children: [rec.child('a'), rec.child('b', { kind: 'stubborn', shutdown: 'brutal' })] }, { log });
    const b = worker(sup, 'b');
    await sup.shutdown('infinity');
    expect(b.state).toBe('running'); // never got gh.shutdown
    expect(b.exitReason).toBe('killed');
    expect(rec.events.slice(2)).toEqual(['down:b:killed', 'down:a:shutdown']);
    expect(lines.filter((l) => l.msg === 'supervisor report')).toEqual([]);
  });

  test('a child that cannot take gh.shutdown is stopped at once', async () => {
    const rec = recorder();
    const sup = await startSup({ id: 'sup', children: [rec.child('a', { kind: 'plain', shutdown: 60_000 })] });
    await sup.shutdown('infinity');
    expect(rec.events).toEqual(['start:a', 'down:a:shutdown']);
  });

  test('a supervisor shut down with a timeout it overruns is killed, and its children with it', async () => {
    const rec = recorder();
    const sup = new Supervisor({ id: 'sup', children: [rec.child('a'), rec.child('b', { kind: 'stubborn', shutdown: 'infinity' })] });
    await sup.start();
    const down = await sup.shutdown(25);
    expect(down.reason).toBe('killed');
    expect(rec.events.slice(2)).toEqual(['down:b:killed', 'down:a:killed']);
    expect(sup.state).toBe('failed');
  });

  test('a supervisor killed while a child is still starting kills that child when its start completes', async () => {
    const rec = recorder();
    const slow = rec.child('slow');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let reached!: () => void;
    const entered = new Promise<void>((r) => (reached = r));
    const sup = new Supervisor({
      id: 'sup',
      children: [rec.child('a'), { ...slow, start: async (ctx) => (reached(), await gate, slow.start(ctx)) }],
    });
    const started = sup.start();
    await entered;
    sup.kill();
    expect(sup.exitReason).toBe('killed');
    release();
    await expect(started).rejects.toMatchObject({ code: 'GH_ERR_CHILD_START' });
    expect(rec.events).toEqual(['start:a', 'down:a:killed', 'start:slow', 'down:slow:killed']);
  });

  test('a child crashing during the supervisor shutdown is not restarted', async () => {
    const { log, lines } = captureLog();
    const rec = recorder();
    const sup = await startSup({ id: 'sup', maxRestarts: 10, children: [rec.child('a'), rec.child('b', { kind: 'stubborn', shutdown: 'infinity' })] }, { log });
    const a = worker(sup, 'a');
    const b = worker(sup, 'b');
    const stopped = sup.shutdown('infinity');
    // b is being asked to stop first (reverse order) and is draining; a, not yet asked, crashes.
    await vi.waitFor(() => expect(b.state).toBe('draining'), { timeout: 2_000 });
    a.send({ type: 'crash' });
    b.send({ type: 'crash' });
    expect((await stopped).reason).toBe('shutdown');
    expect(rec.events).toEqual(['start:a', 'start:b', 'down:a:error', 'down:b:error']);
    expect(lines.filter((l) => l.msg === 'child restarted')).toEqual([]);
    expect(lines.filter((l) => l.errorContext === 'shutdown_error')).toEqual([]);
  });
});

describe('Supervisor: restart intensity', () => {
  test('more than maxRestarts within periodMs: children stopped in reverse, exit error GH_ERR_SUPERVISOR_INTENSITY', async () => {
    const { log, lines } = captureLog();
    const clock = new ManualClock();
    const rec = recorder();
    const sup = await startSup({ id: 'sup', maxRestarts: 2, periodMs: 1_000, children: [rec.child('a'), rec.child('b'), rec.child('c')] }, { log, clock });
    const down = downOf(sup);
    for (let i = 0; i < 2; i++) {
      worker(sup, 'b').send({ type: 'crash' });
      await sup.settled();
      clock.advance(100);
    }
    expect(worker(sup, 'b').restarts).toBe(2);
    rec.events.length = 0;
    worker(sup, 'b').send({ type: 'crash' });
    const d = await down;
    expect(d.reason).toBe('error');
    expect(d.error).toMatchObject({ code: 'GH_ERR_SUPERVISOR_INTENSITY' });
    expect(sup.exitError).toMatchObject({ code: 'GH_ERR_SUPERVISOR_INTENSITY' });
    expect(sup.state).toBe('failed');
    expect(rec.events).toEqual(['down:b:error', 'down:c:shutdown', 'down:a:shutdown']);
    expect(lines).toContainEqual(
      expect.objectContaining({ msg: 'supervisor report', supervisor: 'sup', errorContext: 'shutdown', reason: 'reached_max_restart_intensity', offender: 'b' }),
    );
  });

  test('restarts spread beyond the period do not escalate', async () => {
    const clock = new ManualClock();
    const rec = recorder();
    const sup = await startSup({ id: 'sup', maxRestarts: 2, periodMs: 1_000, children: [rec.child('a'), rec.child('b')] }, { clock });
    for (let i = 1; i <= 8; i++) {
      worker(sup, i % 2 ? 'a' : 'b').send({ type: 'crash' });
      await sup.settled();
      expect(sup.status).toBe('running');
      // Two restarts fit in any 1000 ms window; a third never does.
      clock.advance(600);
    }
    expect(worker(sup, 'a').restarts).toBe(4);
    expect(worker(sup, 'b').restarts).toBe(4);
  });

  test('the window is sliding: the third restart inside one period escalates even after quiet periods', async () => {
    const clock = new ManualClock();
    const rec = recorder();
    const sup = await startSup({ id: 'sup', maxRestarts: 2, periodMs: 1_000, children: [rec.child('a')] }, { clock });
    const down = downOf(sup);
    worker(sup, 'a').send({ type: 'crash' }); // t=0
    await sup.settled();
    clock.advance(5_000);
    worker(sup, 'a').send({ type: 'crash' }); // t=5000, the one at 0 has expired
    await sup.settled();
    clock.advance(999);
    worker(sup, 'a').send({ type: 'crash' }); // t=5999
    await sup.settled();
    expect(sup.status).toBe('running');
    worker(sup, 'a').send({ type: 'crash' }); // t=5999: third within 1000 ms
    expect((await down).error).toMatchObject({ code: 'GH_ERR_SUPERVISOR_INTENSITY' });
  });

  test('maxRestarts 0: the first restart escalates', async () => {
    const rec = recorder();
    const sup = await startSup({ id: 'sup', maxRestarts: 0, children: [rec.child('a')] });
    const down = downOf(sup);
    worker(sup, 'a').send({ type: 'crash' });
    expect((await down).error).toMatchObject({ code: 'GH_ERR_SUPERVISOR_INTENSITY' });
    expect(rec.events).toEqual(['start:a', 'down:a:error']);
  });

  test('clean exits of a permanent child count toward the intensity too', async () => {
    const rec = recorder();
    const sup = await startSup({ id: 'sup', maxRestarts: 1, children: [rec.child('a')] });
    const down = downOf(sup);
    worker(sup, 'a').send({ type: 'finish' });
    await sup.settled();
    worker(sup, 'a').send({ type: 'finish' });
    expect((await down).error).toMatchObject({ code: 'GH_ERR_SUPERVISOR_INTENSITY' });
  });

  test('escalation through two levels: inner gives up, outer restarts it, then outer gives up', async () => {
    const { log, lines } = captureLog();
    const clock = new ManualClock();
    const rec = recorder();
    const inner = supervisorChild({ id: 'inner', maxRestarts: 0, children: [rec.child('w')] }, { clock });
    const sup = await startSup({ id: 'outer', maxRestarts: 1, periodMs: 5_000, children: [rec.child('first'), inner, rec.child('last')] }, { log, clock });
    const outerDown = downOf(sup);
    const firstInner = sup.child('inner') as Supervisor;
    const innerDown = downOf(firstInner);

    worker(firstInner, 'w').send({ type: 'crash' });
    const d1 = await innerDown;
    expect(d1.reason).toBe('error');
    expect(d1.error).toMatchObject({ code: 'GH_ERR_SUPERVISOR_INTENSITY' });
    await sup.settled();

    const secondInner = sup.child('inner') as Supervisor;
    expect(secondInner).not.toBe(firstInner);
    expect(secondInner.restarts).toBe(1);
    expect(node(sup.tree(), 'inner')).toMatchObject({ id: 'inner', type: 'supervisor', restarts: 1, state: 'running', status: 'running' });
    expect(worker(sup, 'first').restarts).toBe(0); // one_for_one: the sibling is untouched

    worker(secondInner, 'w').send({ type: 'crash' });
    const d2 = await outerDown;
    expect(d2).toMatchObject({ type: 'DOWN', id: 'outer', reason: 'error' });
    expect(d2.error).toMatchObject({ code: 'GH_ERR_SUPERVISOR_INTENSITY' });
    expect(sup.children()).toEqual([]);
    expect(rec.events).toEqual([
      'start:first', 'start:w', 'start:last',
      'down:w:error', // inner #1 gives up
      'start:w', // outer restarts inner
      'down:w:error', // inner #2 gives up; outer gives up and stops the rest in reverse
      'down:last:shutdown', 'down:first:shutdown',
    ]);
    expect(lines.filter((l) => l.reason === 'reached_max_restart_intensity').map((l) => l.supervisor)).toEqual(['inner', 'inner', 'outer']);
  });
});

describe('Supervisor: spec validation', () => {
  const ok: ChildSpec = { id: 'ok', start: () => new MachineActor({ id: 'ok', type: 'worker', logic: cleanMachine }).start() };
  const cases: [string, unknown][] = [
    ['id', { id: '', children: [] }],
    ['strategy', { id: 's', strategy: 'one_for_some', children: [] }],
    ['maxRestarts', { id: 's', maxRestarts: -1, children: [] }],
    ['maxRestarts', { id: 's', maxRestarts: 1.5, children: [] }],
    ['periodMs', { id: 's', periodMs: 0, children: [] }],
    ['children', { id: 's', children: 'none' }],
    ['children.1.id', { id: 's', children: [ok, { start: ok.start }] }],
    ['children.1.id', { id: 's', children: [ok, { ...ok }] }],
    ['children.1.start', { id: 's', children: [ok, { id: 'x' }] }],
    ['children.0.restart', { id: 's', children: [{ ...ok, restart: 'sometimes' }] }],
    ['children.0.shutdown', { id: 's', children: [{ ...ok, shutdown: -5 }] }],
    ['children.0.shutdown', { id: 's', children: [{ ...ok, shutdown: 'gentle' }] }],
  ];

  test.each(cases)('a bad %s is rejected with GH_ERR_SUPERVISOR_SPEC naming it, and nothing starts', (key, spec) => {
    const start = vi.fn(ok.start);
    const s = spec as SupervisorSpec;
    // Every start function is the spy, to see that none is called.
    if (Array.isArray(s.children)) s.children = s.children.map((c: Partial<ChildSpec>) => (typeof c?.start === 'function' ? { ...c, start } : c) as ChildSpec);
    const liveBefore = live.size;
    let err: unknown;
    try {
      new Supervisor(s);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'GH_ERR_SUPERVISOR_SPEC', name: 'SupervisorSpecError' });
    expect((err as Error).message).toContain(`${key}:`);
    expect(start).not.toHaveBeenCalled();
    expect(live.size).toBe(liveBefore);
  });

  test('a bad nested supervisor spec is rejected while the tree is built', () => {
    expect(() => supervisorChild({ id: 'inner', children: [{ ...ok, restart: 'never' as RestartType }] })).toThrow(
      expect.objectContaining({ code: 'GH_ERR_SUPERVISOR_SPEC', message: expect.stringContaining('children.0.restart') }),
    );
  });

  test('defaults are OTP defaults', () => {
    const sup = new Supervisor({ id: 's', children: [] });
    track(sup);
    expect(sup.spec).toEqual({ id: 's', strategy: 'one_for_one', maxRestarts: 1, periodMs: 5_000 });
  });
});

describe('Supervisor: failed start', () => {
  test('a failed start stops the children already started, in reverse, and throws GH_ERR_CHILD_START', async () => {
    const { log, lines } = captureLog();
    const rec = recorder();
    const sup = new Supervisor(
      { id: 'sup', children: [rec.child('a'), rec.child('b'), rec.child('c', { failStart: () => true }), rec.child('d')] },
      { log },
    );
    const down = downOf(sup);
    const err = await sup.start().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'GH_ERR_CHILD_START', name: 'ChildStartError' });
    expect((err as Error).message).toContain('child c');
    expect(((err as Error).cause as Error).message).toBe('start of c refused');
    expect(rec.events).toEqual(['start:a', 'start:b', 'failstart:c', 'down:b:shutdown', 'down:a:shutdown']);
    expect(await down).toMatchObject({ reason: 'error', error: err });
    expect(sup.status).toBe('exited');
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'supervisor report', errorContext: 'start_error', offender: 'c' }));
  });

  test('a child whose machine throws in its initial entry action is a failed start', async () => {
    const rec = recorder();
    const sup = new Supervisor({ id: 'sup', children: [rec.child('a'), rec.child('bad', { kind: 'badInit' })] });
    await expect(sup.start()).rejects.toMatchObject({ code: 'GH_ERR_CHILD_START', cause: expect.objectContaining({ message: 'boom' }) });
    expect(rec.events).toEqual(['start:a', 'start:bad', 'down:bad:error', 'down:a:shutdown']);
  });

  test('a child that fails to restart is retried, each try counting toward the intensity', async () => {
    const { log, lines } = captureLog();
    let refuse = false;
    const rec = recorder();
    const sup = await startSup({ id: 'sup', maxRestarts: 3, children: [rec.child('a', { failStart: () => refuse })] }, { log });
    const down = downOf(sup);
    refuse = true;
    worker(sup, 'a').send({ type: 'crash' });
    expect((await down).error).toMatchObject({ code: 'GH_ERR_SUPERVISOR_INTENSITY' });
    expect(rec.events).toEqual(['start:a', 'down:a:error', 'failstart:a', 'failstart:a', 'failstart:a']);
    expect(lines.filter((l) => l.errorContext === 'start_error')).toHaveLength(3);
  });

  test('a child that is done at once is handled by its real exit: transient stays down, permanent escalates', async () => {
    const oneShot = createMachine({ id: 'oneShot', initial: 'done', states: { done: { type: 'final' } } });
    const sup = await startSup({ id: 'sup', children: [machineChild({ id: 'once', logic: oneShot, restart: 'transient' })] });
    await sup.settled();
    expect(sup.child('once')).toBeUndefined();
    expect(sup.whichChildren()).toEqual([{ id: 'once', actor: undefined, restarts: 0, failed: false }]);
    expect(sup.status).toBe('running');

    const looping = await startSup({ id: 'looping', maxRestarts: 2, children: [machineChild({ id: 'again', logic: oneShot })] });
    // exited(), not monitor(): the loop may already be over, and a late monitor only says noproc.
    const down = await looping.exited();
    expect(down.reason).toBe('error');
    expect(down.error).toMatchObject({ code: 'GH_ERR_SUPERVISOR_INTENSITY' });
  });

  test('start() twice starts the children once', async () => {
    const rec = recorder();
    const sup = new Supervisor({ id: 'sup', children: [rec.child('a')] });
    track(sup);
    await Promise.all([sup.start(), sup.start()]);
    await sup.start();
    expect(rec.events).toEqual(['start:a']);
  });

  test('a supervisor shut down before start() starts nothing', async () => {
    const rec = recorder();
    const sup = new Supervisor({ id: 'sup', children: [rec.child('a')] });
    expect((await sup.shutdown('infinity')).reason).toBe('shutdown');
    await sup.start();
    expect(rec.events).toEqual([]);
  });
});

describe('Supervisor: restart counts and the tree', () => {
  test('the restart count shows on the new incarnation and in tree()', async () => {
    const rec = recorder();
    const sup = await startSup({ id: 'root', maxRestarts: 5, children: [rec.child('a'), machineChild({ id: 'm', type: 'probe', logic: cleanMachine })] });
    const first = worker(sup, 'a');
    first.send({ type: 'crash' });
    await sup.settled();
    worker(sup, 'a').send({ type: 'crash' });
    await sup.settled();
    const third = worker(sup, 'a');
    expect(third).not.toBe(first);
    expect(first.restarts).toBe(0);
    expect(third.restarts).toBe(2);
    expect(third.parent).toBe(sup);
    expect(rec.incarnations.get('a')).toHaveLength(3);
    expect(sup.whichChildren().map(({ id, restarts }) => ({ id, restarts }))).toEqual([
      { id: 'a', restarts: 2 },
      { id: 'm', restarts: 0 },
    ]);
    const tree = sup.tree();
    expect(tree).toMatchObject({ id: 'root', type: 'supervisor', state: 'running', status: 'running', restarts: 0, strategy: 'one_for_one' });
    expect(tree.children.map((c) => [c.id, c.type, c.state, c.status, c.restarts])).toEqual([
      ['a', 'worker', 'running', 'running', 2],
      ['m', 'probe', 'running', 'running', 0],
    ]);
    expect(sup.tree({ depth: 0 })).toMatchObject({ children: [], truncated: 2 });
    expect(sup.tree({ limit: 1 })).toMatchObject({ children: [expect.objectContaining({ id: 'a' })], truncated: 1 });
    expect(sup.tree({ type: 'probe' }).children.map((c) => c.id)).toEqual(['m']);
    expect(sup.tree({ type: 'probe', limit: 1 })).toMatchObject({ children: [expect.objectContaining({ id: 'm' })] });
    expect(sup.tree({ type: 'probe', limit: 1 }).truncated).toBeUndefined();
  });

  test('a nested tree shows every level', async () => {
    const rec = recorder();
    const sup = await startSup({
      id: 'root',
      children: [rec.child('a'), supervisorChild({ id: 'sub', strategy: 'rest_for_one', children: [rec.child('x'), rec.child('y')] })],
    });
    const t = sup.tree();
    expect(node(t, 'sub')).toMatchObject({ type: 'supervisor', strategy: 'rest_for_one', children: [{ id: 'x' }, { id: 'y' }] });
    expect(sup.tree({ depth: 1 }).children[1]).toMatchObject({ id: 'sub', children: [], truncated: 2 });
    await sup.shutdown('infinity');
    // Reverse order reaches into the sub-supervisor too.
    expect(rec.events.slice(3)).toEqual(['down:y:shutdown', 'down:x:shutdown', 'down:a:shutdown']);
  });
});

describe('Supervisor: startChild / removeChild', () => {
  test('startChild adds a child at the end; it is supervised like the others', async () => {
    const rec = recorder();
    const sup = await startSup({ id: 'sup', strategy: 'rest_for_one', maxRestarts: 5, children: [rec.child('a')] });
    const b = await sup.startChild(rec.child('b'));
    expect(b?.parent).toBe(sup);
    expect(sup.whichChildren().map((c) => c.id)).toEqual(['a', 'b']);
    worker(sup, 'a').send({ type: 'crash' });
    await sup.settled();
    expect(rec.events).toEqual(['start:a', 'start:b', 'down:a:error', 'down:b:shutdown', 'start:a', 'start:b']);
    await sup.shutdown('infinity');
    expect(rec.events.slice(-2)).toEqual(['down:b:shutdown', 'down:a:shutdown']);
  });

  test('startChild rejects a duplicate id or a bad spec with GH_ERR_SUPERVISOR_SPEC', async () => {
    const rec = recorder();
    const sup = await startSup({ id: 'sup', children: [rec.child('a')] });
    await expect(sup.startChild(rec.child('a'))).rejects.toMatchObject({ code: 'GH_ERR_SUPERVISOR_SPEC' });
    await expect(sup.startChild({ ...rec.child('z'), restart: 'often' as RestartType })).rejects.toMatchObject({ code: 'GH_ERR_SUPERVISOR_SPEC' });
    // Two concurrent adds of one id: one wins.
    const both = await Promise.allSettled([sup.startChild(rec.child('b')), sup.startChild(rec.child('b'))]);
    expect(both.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(sup.whichChildren().map((c) => c.id)).toEqual(['a', 'b']);
    expect(rec.events).toEqual(['start:a', 'start:b']);
  });

  test('startChild whose start fails rejects with GH_ERR_CHILD_START and leaves no slot', async () => {
    const rec = recorder();
    const sup = await startSup({ id: 'sup', children: [] });
    await expect(sup.startChild(rec.child('x', { failStart: () => true }))).rejects.toMatchObject({ code: 'GH_ERR_CHILD_START' });
    expect(sup.whichChildren()).toEqual([]);
  });

  test('startChild on a stopped supervisor is refused', async () => {
    const rec = recorder();
    const sup = await startSup({ id: 'sup', children: [] });
    await sup.shutdown('infinity');
    await expect(sup.startChild(rec.child('x'))).rejects.toMatchObject({ code: 'GH_ERR_CHILD_START' });
    expect(rec.events).toEqual([]);
  });

  test('removeChild stops the child (not a failure, not restarted) and forgets it', async () => {
    const { log, lines } = captureLog();
    const rec = recorder();
    const sup = await startSup({ id: 'sup', strategy: 'one_for_all', children: [rec.child('a'), rec.child('b'), rec.child('c')] }, { log });
    expect(await sup.removeChild('b')).toBe(true);
    expect(await sup.removeChild('b')).toBe(false);
    expect(await sup.removeChild('nope')).toBe(false);
    await sup.settled();
    expect(rec.events).toEqual(['start:a', 'start:b', 'start:c', 'down:b:shutdown']);
    expect(sup.whichChildren().map((c) => c.id)).toEqual(['a', 'c']);
    expect(lines.filter((l) => l.msg === 'supervisor report')).toEqual([]);
  });

  test('a temporary child started again after it ended goes back to its place, and stops in spec order', async () => {
    const rec = recorder();
    // Root-like: `t` (the custom actors' subtree once was temporary) sits between `a` and `c`.
    const sup = await startSup({ id: 'sup', children: [rec.child('a'), rec.child('t', { restart: 'temporary' }), rec.child('c')] });
    await endChild(sup, 't', 'crash');
    await sup.settled();
    expect(sup.whichChildren().map((c) => c.id)).toEqual(['a', 'c']);
    await sup.startChild(rec.child('t', { restart: 'temporary' }));
    expect(sup.whichChildren().map((c) => c.id)).toEqual(['a', 't', 'c']);
    rec.events.length = 0;
    await sup.shutdown('infinity');
    expect(rec.events).toEqual(['down:c:shutdown', 'down:t:shutdown', 'down:a:shutdown']);
  });

  test('removeChild then startChild of one id keeps its place; restarts never move a child', async () => {
    const rec = recorder();
    const sup = await startSup({ id: 'sup', maxRestarts: 5, children: ['a', 'b', 'c', 'd'].map((id) => rec.child(id)) });
    await sup.removeChild('b');
    await sup.removeChild('c');
    await sup.startChild(rec.child('c'));
    await sup.startChild(rec.child('e'));
    await sup.startChild(rec.child('b'));
    expect(sup.whichChildren().map((c) => c.id)).toEqual(['a', 'b', 'c', 'd', 'e']);
    worker(sup, 'b').send({ type: 'crash' });
    await sup.settled();
    expect(sup.whichChildren().map((c) => [c.id, c.restarts])).toEqual([['a', 0], ['b', 1], ['c', 0], ['d', 0], ['e', 0]]);
    rec.events.length = 0;
    await sup.shutdown('infinity');
    expect(rec.events).toEqual(['down:e:shutdown', 'down:d:shutdown', 'down:c:shutdown', 'down:b:shutdown', 'down:a:shutdown']);
  });

  test('a detached child is out of the order: its replacement started first stays, a later child of its id is new', async () => {
    const rec = recorder();
    const sup = await startSup({ id: 'sup', children: [rec.child('l'), rec.child('m')] });
    // A listener move: the new incarnation starts, then the old one is detached (shard-runtime reconcile).
    await sup.startChild(rec.child('l~1'));
    const old = await sup.detachChild('l');
    expect(sup.whichChildren().map((c) => c.id)).toEqual(['m', 'l~1']);
    await old!.shutdown(1_000);
    await sup.settled();
    expect(sup.whichChildren().map((c) => c.id)).toEqual(['m', 'l~1']);
    await sup.startChild(rec.child('l'));
    expect(sup.whichChildren().map((c) => c.id)).toEqual(['m', 'l~1', 'l']);
    expect(rec.events.filter((e) => e.startsWith('start:l')).length).toBe(3);
  });

  test('a temporary sibling stopped by a one_for_all restart is not restarted', async () => {
    const rec = recorder();
    const sup = await startSup({ id: 'sup', strategy: 'one_for_all', children: [rec.child('a'), rec.child('t', { restart: 'temporary' }), rec.child('c')] });
    worker(sup, 'c').send({ type: 'crash' });
    await sup.settled();
    expect(rec.events.slice(3)).toEqual(['down:c:error', 'down:t:shutdown', 'down:a:shutdown', 'start:a', 'start:c']);
    expect(sup.whichChildren().map((c) => c.id)).toEqual(['a', 'c']);
  });

  test('a temporary sibling that ends while a one_for_all restart stops the others leaves the rest listed', async () => {
    const rec = recorder();
    const children = [rec.child('t', { restart: 'temporary' }), rec.child('x', { kind: 'stubborn', restart: 'transient' }), rec.child('z')];
    const sup = await startSup({ id: 'sup', strategy: 'one_for_all', maxRestarts: 5, children });
    const x = worker(sup, 'x');
    worker(sup, 'z').send({ type: 'crash' });
    // The restart is stopping x (it drains until crashed): t ends on its own meanwhile.
    await expect.poll(() => x.ref.getSnapshot().value).toBe('draining');
    worker(sup, 't').send({ type: 'crash' });
    x.send({ type: 'crash' });
    await sup.settled();
    expect(sup.whichChildren().map((c) => c.id)).toEqual(['x', 'z']);
    expect(worker(sup, 'z').status).toBe('running');
    // x's new incarnation would drain forever: it ends by itself (transient: not restarted).
    worker(sup, 'x').send({ type: 'finish' });
    await sup.shutdown('infinity');
    expect(live.list()).toEqual([]);
  });

  test('a second crash already covered by a one_for_all restart does not restart the group twice', async () => {
    const rec = recorder();
    const sup = await startSup({ id: 'sup', strategy: 'one_for_all', maxRestarts: 5, children: [rec.child('a'), rec.child('b')] });
    worker(sup, 'a').send({ type: 'crash' });
    worker(sup, 'b').send({ type: 'crash' });
    await sup.settled();
    expect(rec.events.slice(2)).toEqual(['down:a:error', 'down:b:error', 'start:a', 'start:b']);
    expect(worker(sup, 'a').status).toBe('running');
    expect(worker(sup, 'b').status).toBe('running');
  });
});
