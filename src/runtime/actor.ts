import { Observable } from 'rxjs';
import type { Logger } from 'pino';
import diagnostics from 'node:diagnostics_channel';
import { live } from './live.ts';
import { actorEventsEnabled, channels, emitActorEvent } from './events.ts';

/**
 * Why an actor exited. `normal`/`shutdown` are clean exits; the others are abnormal, except
 * `noproc`. `hung`: a shard thread that missed its heartbeat, killed by its watchdog.
 */
export type ExitReason = 'normal' | 'shutdown' | 'killed' | 'noproc' | 'error' | 'hung';

/** Delivered once to each watcher when the watched actor is gone (Erlang's `'DOWN'` message). */
export interface Down {
  type: 'DOWN';
  ref: number;
  id: string;
  actorType: string;
  reason: ExitReason;
  error?: unknown;
}

export type ActorStatus = 'starting' | 'running' | 'stopping' | 'exited';

/** How long a child gets to stop cleanly: milliseconds, `'brutal'` (kill at once) or `'infinity'`. */
export type ShutdownSpec = number | 'brutal' | 'infinity';

/** One node of the inspectable actor tree (the `/actors` contract). */
export interface TreeNode {
  id: string;
  type: string;
  state: string;
  /** `failed`: a child that gave up on its own restart intensity, kept listed by its supervisor. */
  status: ActorStatus | 'failed';
  restarts: number;
  children: TreeNode[];
  truncated?: number;
  [extra: string]: unknown;
}

export interface TreeOptions {
  /** 1 = the node and its direct children. Unlimited when absent. */
  depth?: number;
  /** Children listed per node; the rest are counted in `truncated`. */
  limit?: number;
  /** Only nodes of this type (and their ancestors) are kept. */
  type?: string;
}

let nextRef = 1;
/**
 * A monitor callback that threw. It is reported here instead of being rethrown: `exit()` often
 * runs inside an xstate observer, where a throw would be rethrown in a timer and kill the process.
 */
export const monitorErrorChannel = diagnostics.channel('gatehouse:actor:monitor-error');
const TRACK_ORIGIN = process.env.GATEHOUSE_TRACK_ORIGIN === '1';

/**
 * The base of every actor in Gatehouse: an id, a type, a parent, a state value, a restart count,
 * monitors that receive exactly one {@link Down}, and a two-phase stop (graceful, then kill).
 * Subclasses implement how to run, how to be asked to stop, and how to be killed.
 *
 * Invariant: `exit()` runs once; after it the actor is out of the live set and every monitor
 * has been called, which is what lets registries clean themselves.
 *
 * @example
 * const off = actor.monitor((down) => log.info({ down }, 'actor down'));
 * await actor.shutdown(5_000);
 */
export abstract class Actor {
  readonly id: string;
  readonly type: string;
  parent: Actor | undefined;
  restarts = 0;
  status: ActorStatus = 'starting';
  /** @internal Its place in the thread's live-actor list (live.ts); -1 when not there. */
  liveIx = -1;
  exitReason: ExitReason | undefined;
  exitError: unknown;
  /** Where the actor was created, when GATEHOUSE_TRACK_ORIGIN=1 (tests): the leak check prints it. */
  readonly origin: string | undefined;
  #monitors: Map<number, (d: Down) => void> | ((d: Down) => void) | undefined;
  #monitorRef = 0;
  /** Set while `forceStop()` runs: a kill reached again from a DOWN it causes is a no-op. */
  #killing = false;
  #exited: Promise<Down> | undefined;
  #resolveExited: ((d: Down) => void) | undefined;

  constructor(id: string, type: string, parent?: Actor) {
    this.id = id;
    this.type = type;
    this.parent = parent;
    this.origin = TRACK_ORIGIN ? new Error().stack?.split('\n').slice(2, 6).join('\n') : undefined;
    live.add(this);
  }

  /** The state value as a string (`open`, `half_closed_client`, `running.idle`). */
  abstract get state(): string;

  /** Live children, for the tree. */
  children(): Iterable<Actor> {
    return [];
  }

  /** Extra fields shown in the tree node (address, counters). Keep it cheap. */
  describe(): Record<string, unknown> | undefined {
    return undefined;
  }

  /**
   * Ask the actor to stop cleanly. Return `true` when it accepted and will exit by itself
   * (it "traps exits"), `false` when it stopped (or will stop) at once.
   */
  protected abstract requestStop(): boolean;

  /** Stop now and release every OS resource. Must end in `exit('killed')` or another exit. */
  protected abstract forceStop(): void;

  /**
   * Watch this actor. `onDown` is called once, with reason `noproc` (on a microtask) when it is
   * already gone. Returns a function that removes the monitor (Erlang `demonitor`).
   */
  monitor(onDown: (d: Down) => void): () => void {
    const ref = nextRef++;
    if (this.status === 'exited') {
      const d: Down = { type: 'DOWN', ref, id: this.id, actorType: this.type, reason: 'noproc' };
      let active = true;
      queueMicrotask(() => {
        if (active) deliver(onDown, d);
      });
      // Demonitoring before the microtask runs also drops the pending noproc (Erlang's flush).
      return () => {
        active = false;
      };
    }
    // One monitor is the common case (a registry); keep it without a Map.
    if (this.#monitors === undefined) {
      this.#monitors = onDown;
      this.#monitorRef = ref;
    } else {
      if (typeof this.#monitors === 'function') this.#monitors = new Map([[this.#monitorRef, this.#monitors]]);
      this.#monitors.set(ref, onDown);
    }
    // Removal is by ref, never by function identity: the single monitor may have moved into the
    // Map since, and the same function may watch twice.
    return () => this.#demonitor(ref);
  }

  #demonitor(ref: number): void {
    const m = this.#monitors;
    if (typeof m === 'function') {
      if (this.#monitorRef === ref) this.#monitors = undefined;
    } else if (m) {
      m.delete(ref);
      if (m.size === 0) this.#monitors = undefined;
    }
  }

  /** The DOWN of this actor as an rxjs Observable: one value, then complete. */
  down$(): Observable<Down> {
    return new Observable<Down>((sub) =>
      this.monitor((d) => {
        sub.next(d);
        sub.complete();
      }),
    );
  }

  /** Resolves with the DOWN when the actor has exited (reason `noproc` if it already had). */
  exited(): Promise<Down> {
    if (this.status === 'exited') {
      return Promise.resolve({ type: 'DOWN', ref: 0, id: this.id, actorType: this.type, reason: this.exitReason ?? 'noproc', error: this.exitError });
    }
    this.#exited ??= new Promise<Down>((r) => (this.#resolveExited = r));
    return this.#exited;
  }

  /**
   * Two-phase stop, as an OTP supervisor does it: ask, wait up to `timeout`, then kill.
   * Resolves once the actor has exited. Idempotent.
   */
  async shutdown(timeout: ShutdownSpec = 5_000): Promise<Down> {
    if (this.status === 'exited') return this.exited();
    const done = this.exited();
    // 'brutal' kills now, also when an earlier, gentler shutdown is still waiting.
    if (timeout === 'brutal') {
      this.status = 'stopping';
      this.kill();
      return done;
    }
    if (this.status !== 'stopping') {
      this.status = 'stopping';
      let trapped: boolean;
      try {
        trapped = this.requestStop();
      } catch (err) {
        this.exit('error', err);
        return done;
      }
      if (!trapped) return done;
    }
    if (timeout === 'infinity' || (this.status as ActorStatus) === 'exited') return done;
    let timer: NodeJS.Timeout | undefined;
    const killed = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeout)));
    const first = await Promise.race([done, killed]);
    clearTimeout(timer);
    if (first === 'timeout') this.kill();
    return done;
  }

  /** Brutal kill: no drain. */
  kill(): void {
    if (this.status === 'exited' || this.#killing) return;
    this.#killing = true;
    try {
      this.forceStop();
    } catch (err) {
      // A subclass that cannot release cleanly is still gone: report it and exit anyway.
      channels.crash.publish({ id: this.id, type: this.type, error: err });
    } finally {
      this.#killing = false;
      if ((this.status as ActorStatus) !== 'exited') this.exit('killed');
    }
  }

  /** Called by subclasses exactly when the actor is gone. Delivers DOWN to every watcher. */
  protected exit(reason: ExitReason, error?: unknown): void {
    if (this.status === 'exited') return;
    this.status = 'exited';
    this.exitReason = reason;
    this.exitError = error;
    live.delete(this);
    const monitors = this.#monitors;
    this.#monitors = undefined;
    const mk = (ref: number): Down => ({ type: 'DOWN', ref, id: this.id, actorType: this.type, reason, error });
    // Each watcher gets its DOWN even if another watcher throws.
    if (typeof monitors === 'function') deliver(monitors, mk(this.#monitorRef));
    else if (monitors) for (const [ref, fn] of monitors) deliver(fn, mk(ref));
    this.#resolveExited?.(mk(0));
    emitActorEvent({ type: 'down', id: this.id, actorType: this.type, reason, error: error instanceof Error ? error.message : undefined });
  }

  /** Marks the actor running (after its start succeeded). */
  protected markRunning(): void {
    if (this.status !== 'starting') return;
    this.status = 'running';
    if (actorEventsEnabled()) emitActorEvent({ type: 'spawned', id: this.id, actorType: this.type, parent: this.parent?.id });
  }

  /** A JSON node of the tree below this actor, honouring depth, limit and type filters. */
  tree(opts: TreeOptions = {}, level = 0): TreeNode {
    const node: TreeNode = {
      id: this.id,
      type: this.type,
      state: this.state,
      status: this.status,
      restarts: this.restarts,
      children: [],
      ...this.describe(),
    };
    if (opts.depth !== undefined && level >= opts.depth) {
      let n = 0;
      for (const _ of this.children()) n++;
      if (n > 0) node.truncated = n;
      return node;
    }
    let shown = 0;
    let hidden = 0;
    for (const child of this.children()) {
      // Without a type filter a hidden child is not rendered at all (cheap at 10k connections).
      if (!opts.type && opts.limit !== undefined && shown >= opts.limit) {
        hidden++;
        continue;
      }
      const sub = child.tree(opts, level + 1);
      if (opts.type && sub.type !== opts.type && sub.children.length === 0) continue;
      if (opts.limit !== undefined && shown >= opts.limit) {
        hidden++;
        continue;
      }
      node.children.push(sub);
      shown++;
    }
    if (hidden > 0) node.truncated = hidden;
    return node;
  }
}

function deliver(fn: (d: Down) => void, d: Down): void {
  try {
    fn(d);
  } catch (error) {
    monitorErrorChannel.publish({ id: d.id, type: d.actorType, ref: d.ref, error });
  }
}

/** A child logger bound to an actor, as every actor's log lines carry (`actorId`, `actorType`). */
export function actorLogger(parent: Logger, actor: { id: string; type: string }, extra?: Record<string, unknown>): Logger {
  return parent.child({ actorId: actor.id, actorType: actor.type, ...extra });
}
