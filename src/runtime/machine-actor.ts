import { createActor, type AnyActorLogic, type AnyActorRef, type InputFrom, type SnapshotFrom, type Subscription } from 'xstate';
import type { Logger } from 'pino';
import { Actor } from './actor.ts';
import { channels, emitActorEvent, actorEventsEnabled } from './events.ts';
import { InjectedFaultError } from '../errors.ts';

/** The event a machine handles to stop cleanly ("trap exits"); it should then reach a final state. */
export const SHUTDOWN_EVENT = { type: 'gh.shutdown' } as const;

let incarnation = 0;

export interface MachineActorOptions<L extends AnyActorLogic> {
  id: string;
  type: string;
  logic: L;
  input?: InputFrom<L>;
  parent?: Actor;
  log?: Logger;
  /** Called when the actor is killed or fails, to release OS resources that xstate may not (xstate#4726). */
  release?: () => void;
  /** What `/actors` shows of it besides id, type and state (a probe's last error, a breaker's failures). */
  describe?: (snapshot: SnapshotFrom<L>) => Record<string, unknown>;
}

function stateString(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object') {
    return Object.entries(value as Record<string, unknown>)
      .map(([k, v]) => (v && (typeof v === 'string' || typeof v === 'object') ? `${k}.${stateString(v)}` : k))
      .join(',');
  }
  return String(value ?? '');
}

/**
 * A full xstate v5 actor inside Gatehouse's actor tree. Used where actors are few and long-lived
 * (supervised workers, probes, breakers, custom actors). Its xstate id is unique per incarnation
 * (`id#n`), because xstate frees an id only on stop (xstate#4453).
 *
 * Every xstate actor we create has an error observer: an unobserved error in a root actor is
 * rethrown in a timer and would kill the process. Here it becomes a DOWN with reason `error`.
 *
 * Shutdown: if the machine can take `gh.shutdown` in its current state, it is sent and the actor
 * is given its shutdown time to reach a final state; otherwise it is stopped at once.
 *
 * @example
 * const a = new MachineActor({ id: 'audit', type: 'custom', logic: auditMachine }).start();
 * a.monitor((d) => console.log(d.reason));
 */
export class MachineActor<L extends AnyActorLogic = AnyActorLogic> extends Actor {
  readonly ref: AnyActorRef;
  readonly #release: (() => void) | undefined;
  readonly #describe: ((snapshot: SnapshotFrom<L>) => Record<string, unknown>) | undefined;
  #sub: Subscription | undefined;
  #state = '';
  #killing = false;

  constructor(opts: MachineActorOptions<L>) {
    super(opts.id, opts.type, opts.parent);
    this.#release = opts.release;
    this.#describe = opts.describe;
    this.ref = createActor(opts.logic, {
      input: opts.input,
      id: `${opts.id}#${++incarnation}`,
      logger: opts.log ? (...args: unknown[]) => opts.log!.info({ args }, 'xstate log') : undefined,
    });
  }

  /** Starts the xstate actor. A throw from its entry actions becomes a DOWN with reason `error`. Idempotent. */
  start(): this {
    if (this.#sub || this.status !== 'starting') return this;
    this.#sub = this.ref.subscribe({
      next: (snap: { value?: unknown; status?: string }) => {
        const s = stateString(snap.value ?? snap.status);
        if (s !== this.#state) {
          this.#state = s;
          if (actorEventsEnabled()) emitActorEvent({ type: 'state', id: this.id, actorType: this.type, state: s });
        }
      },
      error: (err: unknown) => {
        channels.crash.publish({ id: this.id, type: this.type, error: err });
        this.#stopOrphans();
        this.#cleanup();
        this.exit('error', err);
      },
      complete: () => {
        const snap = this.ref.getSnapshot() as { status: string };
        this.#cleanup();
        // A final state reached because we asked it to stop is a shutdown, as in OTP where a
        // process trapping exits ends with the reason it was given.
        if (snap.status === 'done') this.exit(this.status === 'stopping' && !this.#killing ? 'shutdown' : 'normal');
        else this.exit(this.#killing ? 'killed' : 'shutdown');
      },
    });
    this.ref.start();
    if (this.status === 'starting') this.markRunning();
    return this;
  }

  get state(): string {
    return this.#state || 'starting';
  }

  override describe(): Record<string, unknown> | undefined {
    return this.#describe?.(this.ref.getSnapshot() as SnapshotFrom<L>);
  }

  /**
   * After an error xstate stops the machine but not its invoked and spawned children, so their
   * cleanup (a `fromCallback` disposer closing a server) never runs (xstate#4726) and a restart
   * would find the port taken. Stop them here, deepest first. `_stop` is xstate's internal stop
   * for non-root actors; xstate is pinned to v5 and kept behind this class.
   */
  #stopOrphans(): void {
    const visit = (ref: AnyActorRef): void => {
      const children = (ref.getSnapshot() as { children?: Record<string, AnyActorRef | undefined> }).children ?? {};
      for (const child of Object.values(children)) {
        if (!child) continue;
        visit(child);
        try {
          (child as unknown as { _stop?: () => void })._stop?.();
        } catch {
          // Best effort: the parent is already gone.
        }
      }
    };
    visit(this.ref);
  }

  /**
   * Fails the actor exactly as if its logic had thrown: a DOWN with reason `error` that its
   * supervisor acts on. Without `err` it is fault injection (debug mode, chaos drills, tests of
   * supervision); with one, an error its code threw outside xstate (a timer, a socket callback).
   * False when it had already exited.
   */
  crash(err: unknown = new InjectedFaultError(this.id)): boolean {
    if (this.status === 'exited' || this.#killing) return false;
    channels.crash.publish({ id: this.id, type: this.type, error: err });
    this.#killing = true;
    this.#sub?.unsubscribe();
    this.#sub = undefined;
    this.#stopOrphans();
    this.ref.stop();
    this.#cleanup();
    this.exit('error', err);
    return true;
  }

  /** Sends an event to the xstate actor. */
  send(event: { type: string; [k: string]: unknown }): void {
    if (this.status !== 'exited') this.ref.send(event);
  }

  protected requestStop(): boolean {
    if (!this.#sub) {
      // Never started: there is nothing to drain.
      this.ref.stop();
      this.#cleanup();
      this.exit('shutdown');
      return false;
    }
    const snap = this.ref.getSnapshot() as { can?: (e: unknown) => boolean; status: string };
    if (snap.status === 'active' && typeof snap.can === 'function' && snap.can(SHUTDOWN_EVENT)) {
      this.ref.send(SHUTDOWN_EVENT);
      return true;
    }
    this.ref.stop();
    return false;
  }

  protected forceStop(): void {
    this.#killing = true;
    this.ref.stop();
    // xstate may not run cleanup after an error (xstate#4726), and defers stop() while the actor
    // is processing an event: release resources and exit ourselves.
    if (this.status !== 'exited') {
      this.#cleanup();
      this.exit('killed');
    }
  }

  #cleanup(): void {
    this.#sub?.unsubscribe();
    this.#sub = undefined;
    try {
      this.#release?.();
    } catch {
      // Releasing is best effort: the actor is already gone.
    }
  }
}
