import { afterEach } from 'vitest';
import { setup } from 'xstate';
import pino, { type Logger } from 'pino';
import { Actor, type ExitReason } from '../../src/runtime/actor.ts';
import { MachineActor } from '../../src/runtime/machine-actor.ts';
import { live } from '../../src/runtime/live.ts';
import { Supervisor, type ChildSpec, type RestartType, type SupervisorSpec } from '../../src/supervisors/supervisor.ts';
import type { ShutdownSpec } from '../../src/runtime/actor.ts';

/** Events the test machines understand. */
export type WorkerEvent = { type: 'crash' } | { type: 'finish' } | { type: 'gh.shutdown' };

const base = setup({
  types: { events: {} as WorkerEvent },
  actions: {
    explode: () => {
      throw new Error('boom');
    },
  },
});

/** Stops cleanly when asked: `gh.shutdown` leads to a final state. Crashes on `crash`, ends on `finish`. */
export const cleanMachine = base.createMachine({
  id: 'clean',
  initial: 'running',
  states: {
    running: { on: { crash: { actions: 'explode' }, finish: 'done', 'gh.shutdown': 'done' } },
    done: { type: 'final' },
  },
});

/** Takes `gh.shutdown` but never finishes draining: only a kill (or a crash) ends it. */
export const stubbornMachine = base.createMachine({
  id: 'stubborn',
  initial: 'running',
  states: {
    running: { on: { crash: { actions: 'explode' }, finish: 'done', 'gh.shutdown': 'draining' } },
    draining: { on: { crash: { actions: 'explode' } } },
    done: { type: 'final' },
  },
});

/** Does not handle `gh.shutdown`: stopped at once. */
export const plainMachine = base.createMachine({
  id: 'plain',
  initial: 'running',
  states: {
    running: { on: { crash: { actions: 'explode' }, finish: 'done' } },
    done: { type: 'final' },
  },
});

/** Throws from its initial entry action: it fails in its own start. */
export const badInitMachine = base.createMachine({
  id: 'badInit',
  initial: 'running',
  states: { running: { entry: 'explode' } },
});

export const machines = { clean: cleanMachine, stubborn: stubbornMachine, plain: plainMachine, badInit: badInitMachine };
export type MachineKind = keyof typeof machines;

/** A pino logger whose lines are parsed into `lines`, to assert on supervisor reports. */
export function captureLog(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

/**
 * Child specs whose starts and DOWNs are recorded, in order, in `events`
 * (`start:a`, `down:a:shutdown`), so tests can check start and stop order.
 */
export function recorder() {
  const events: string[] = [];
  const incarnations = new Map<string, MachineActor[]>();
  function child(
    id: string,
    o: { kind?: MachineKind; restart?: RestartType; shutdown?: ShutdownSpec; failStart?: () => boolean } = {},
  ): ChildSpec {
    return {
      id,
      restart: o.restart,
      shutdown: o.shutdown,
      start: ({ parent, log }) => {
        if (o.failStart?.()) {
          events.push(`failstart:${id}`);
          throw new Error(`start of ${id} refused`);
        }
        events.push(`start:${id}`);
        const a = new MachineActor({ id, type: 'worker', logic: machines[o.kind ?? 'clean'], parent, log });
        a.monitor((d) => events.push(`down:${id}:${d.reason}`));
        let list = incarnations.get(id);
        if (!list) incarnations.set(id, (list = []));
        list.push(a);
        return a.start();
      },
    };
  }
  return { events, child, incarnations };
}

/** A minimal synchronous actor: `crash()`, `finish()`; stops at once when asked. */
export class TestActor extends Actor {
  #state = 'running';
  /** How many monitors are currently set on it (to see that watchers let go). */
  activeMonitors = 0;

  constructor(id: string, type = 'test') {
    super(id, type);
    this.markRunning();
  }

  get state(): string {
    return this.#state;
  }

  override monitor(onDown: Parameters<Actor['monitor']>[0]): () => void {
    if (this.status === 'exited') return super.monitor(onDown);
    this.activeMonitors++;
    let on = true;
    const off = super.monitor((d) => {
      if (on) this.activeMonitors--;
      on = false;
      onDown(d);
    });
    return () => {
      if (on) this.activeMonitors--;
      on = false;
      off();
    };
  }

  crash(err: unknown = new Error('crash')): void {
    this.#end('error', err);
  }

  finish(): void {
    this.#end('normal');
  }

  protected requestStop(): boolean {
    this.#end('shutdown');
    return false;
  }

  protected forceStop(): void {
    this.#end('killed');
  }

  #end(reason: ExitReason, err?: unknown): void {
    this.#state = 'stopped';
    this.exit(reason, err);
  }
}

/**
 * Every test ends with no live actors (the global leak check does it too, per file). The leftovers
 * are killed before the failure is thrown, so that only the test that leaked fails.
 * No vitest import here: child processes load this file.
 */
export function expectNoLiveActors(): void {
  const left = live.list();
  if (left.length === 0) return;
  const names = left.map((a) => `${a.type}:${a.id}:${a.status}`);
  for (const a of left) a.kill();
  throw new Error(`live actors left: ${names.join(', ')}`);
}

/**
 * `startSup(spec)` builds and starts a supervisor that is shut down after each test whatever
 * happens, then checks that no actor is left; `track(sup)` does the same for one built by hand.
 * Call once at a test file's top level.
 *
 * @example
 * const { startSup } = supervisorsPerTest();
 * const sup = await startSup({ id: 'root', strategy: 'one_for_one', children: [] });
 */
export function supervisorsPerTest(): {
  startSup: (spec: SupervisorSpec, opts?: ConstructorParameters<typeof Supervisor>[1]) => Promise<Supervisor>;
  track: (sup: Supervisor) => void;
} {
  const sups: Supervisor[] = [];
  afterEach(async () => {
    for (const s of sups.splice(0)) await s.shutdown('infinity');
    expectNoLiveActors();
  });
  return {
    startSup: (spec, opts = {}) => {
      const sup = new Supervisor(spec, opts);
      sups.push(sup);
      return sup.start();
    },
    track: (sup) => void sups.push(sup),
  };
}
