import diagnostics from 'node:diagnostics_channel';
import { describe, expect, test } from 'vitest';
import { Supervisor, type ChildSpec } from '../../src/supervisors/supervisor.ts';
import { MachineActor } from '../../src/runtime/machine-actor.ts';
import { captureLog, recorder, supervisorsPerTest } from '../runtime/fixtures.ts';

const { startSup } = supervisorsPerTest();

/** A child with its own intensity: 2 restarts within a minute (no test gets near the minute). */
function isolated(spec: ChildSpec): ChildSpec {
  return { ...spec, type: 'custom', intensity: { maxRestarts: 2, periodMs: 60_000 } };
}

function crash(sup: Supervisor, id: string): void {
  const a = sup.child(id);
  if (!(a instanceof MachineActor)) throw new Error(`no live child ${id}`);
  a.send({ type: 'crash' });
}

/** Lets the queued restarts run until child `id` has given up (each restart may queue the next). */
async function untilFailed(sup: Supervisor, id: string): Promise<void> {
  for (let i = 0; i < 10 && !sup.whichChildren().find((c) => c.id === id)?.failed; i++) await sup.settled();
}

/** Counts the restarts published for `gatehouse_actor_restarts_total` while `fn` runs. */
async function countRestarts(fn: () => Promise<void>): Promise<Record<string, number>> {
  const seen: Record<string, number> = {};
  const on = (m: unknown): void => {
    const { child } = m as { child: string };
    seen[child] = (seen[child] ?? 0) + 1;
  };
  diagnostics.subscribe('gatehouse:supervisor:restart', on);
  try {
    await fn();
  } finally {
    diagnostics.unsubscribe('gatehouse:supervisor:restart', on);
  }
  return seen;
}

describe('Supervisor: a child with its own intensity', () => {
  test('a crash loop past its own intensity fails that child alone; it stays listed as failed, in place', async () => {
    const { log, lines } = captureLog();
    const rec = recorder();
    // The supervisor itself tolerates no restart at all: the isolated child's restarts do not count.
    const sup = await startSup({ id: 'actors', maxRestarts: 0, children: [rec.child('a', { restart: 'temporary' }), isolated(rec.child('x')), rec.child('c', { restart: 'temporary' })] }, { log });
    const restarts = await countRestarts(async () => {
      for (let i = 0; i < 3; i++) {
        crash(sup, 'x');
        await sup.settled();
      }
    });
    expect(restarts).toEqual({ x: 2 });
    expect(sup.status).toBe('running');
    expect(sup.child('x')).toBeUndefined();
    expect(sup.child('a')?.status).toBe('running');
    expect(sup.child('c')?.status).toBe('running');
    expect(sup.whichChildren().map(({ id, failed, restarts: n }) => [id, failed, n])).toEqual([['a', false, 0], ['x', true, 2], ['c', false, 0]]);
    const tree = sup.tree();
    expect(tree.children.map((c) => [c.id, c.type, c.state, c.status, c.restarts])).toEqual([
      ['a', 'worker', 'running', 'running', 0],
      ['x', 'custom', 'failed', 'failed', 2],
      ['c', 'worker', 'running', 'running', 0],
    ]);
    expect(sup.tree({ type: 'custom' }).children.map((c) => c.id)).toEqual(['x']);
    expect(sup.tree({ depth: 0 }).truncated).toBe(3);
    expect(lines).toContainEqual(
      expect.objectContaining({ msg: 'supervisor report', supervisor: 'actors', errorContext: 'child_gave_up', reason: 'reached_max_restart_intensity', offender: 'x', maxRestarts: 2 }),
    );
    rec.events.length = 0;
    await sup.shutdown('infinity');
    expect(rec.events).toEqual(['down:c:shutdown', 'down:a:shutdown']);
  });

  test('a failed start is a crash: the supervisor starts, the child is retried and fails alone', async () => {
    const { log, lines } = captureLog();
    const rec = recorder();
    let restarts: Record<string, number> = {};
    let sup: Supervisor | undefined;
    restarts = await countRestarts(async () => {
      sup = await startSup({ id: 'actors', children: [isolated(rec.child('bad', { failStart: () => true })), rec.child('good')] }, { log });
      await untilFailed(sup, 'bad');
    });
    expect(sup!.status).toBe('running');
    expect(rec.events).toEqual(['failstart:bad', 'start:good', 'failstart:bad', 'failstart:bad']);
    expect(restarts).toEqual({ bad: 2 });
    expect(sup!.whichChildren().map(({ id, failed }) => [id, failed])).toEqual([['bad', true], ['good', false]]);
    expect(lines.filter((l) => l.errorContext === 'start_error' && l.offender === 'bad')).toHaveLength(3);
  });

  test('startChild of a failed id (after removeChild) runs it again in its place, with a fresh intensity', async () => {
    const rec = recorder();
    let fail = true;
    const sup = await startSup({ id: 'actors', children: [isolated(rec.child('x', { failStart: () => fail })), rec.child('y')] });
    await untilFailed(sup, 'x');
    expect(sup.whichChildren()[0]).toMatchObject({ id: 'x', failed: true });
    fail = false;
    await sup.removeChild('x');
    expect(await sup.startChild(isolated(rec.child('x', { failStart: () => fail })))).toBeInstanceOf(MachineActor);
    expect(sup.whichChildren().map(({ id, failed }) => [id, failed])).toEqual([['x', false], ['y', false]]);
    crash(sup, 'x');
    await sup.settled();
    expect(sup.child('x')?.status).toBe('running');
    expect(sup.child('x')?.restarts).toBe(1);
  });

  test('startChild of an isolated child whose start throws resolves undefined and keeps it (a crash, not a refused start)', async () => {
    const rec = recorder();
    const sup = await startSup({ id: 'actors', children: [] });
    expect(await sup.startChild(isolated(rec.child('x', { failStart: () => true })))).toBeUndefined();
    await untilFailed(sup, 'x');
    expect(sup.whichChildren()).toMatchObject([{ id: 'x', failed: true, restarts: 2 }]);
  });

  test('an own intensity needs one_for_one, and must be well formed', () => {
    const rec = recorder();
    expect(() => new Supervisor({ id: 's', strategy: 'one_for_all', children: [isolated(rec.child('x'))] })).toThrow(
      expect.objectContaining({ code: 'GH_ERR_SUPERVISOR_SPEC', message: expect.stringMatching(/children\.0\.intensity/) }),
    );
    expect(() => new Supervisor({ id: 's', children: [{ ...rec.child('x'), intensity: { maxRestarts: -1, periodMs: 5 } }] })).toThrow(
      expect.objectContaining({ code: 'GH_ERR_SUPERVISOR_SPEC' }),
    );
  });
});
