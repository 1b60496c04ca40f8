import { createActor } from 'xstate';
import pino, { type Logger } from 'pino';
import { Actor, type Down, type ExitReason, type TreeNode, type TreeOptions } from '../runtime/actor.ts';
import { channels, emitActorEvent } from '../runtime/events.ts';
import { ChildStartError, SupervisorIntensityError } from '../errors.ts';
import { checkChildSpec, checkIsolation, checkSupervisorSpec, type ChildSpec, type RestartType, type SupervisorSpec } from './child-spec.ts';
import { RestartWindow, withFailedChildren } from './intensity.ts';
import { ChildTable, type ChildInfo, type Slot } from './child-table.ts';
import { isCleanExit, supervisorMachine, type SupervisorEvent } from './lifecycle.ts';
import { systemClock, type Clock } from '../runtime/clock.ts';

export { machineChild, type ChildSpec, type RestartType, type StartContext, type Strategy, type SupervisorSpec } from './child-spec.ts';

export interface SupervisorOptions {
  parent?: Actor;
  log?: Logger;
  clock?: Clock;
}

/**
 * A supervisor with Erlang/OTP semantics: children start in list order and stop in reverse order,
 * each given its shutdown time before it is killed; a child that exits is restarted according to
 * its restart type and the strategy; more than `maxRestarts` restarts within `periodMs` make the
 * supervisor stop all its children and exit with `GH_ERR_SUPERVISOR_INTENSITY`, so that its own
 * parent decides. Its lifecycle is itself an xstate actor (starting, running, restarting,
 * stopping, stopped, failed).
 *
 * All work (starts, stops, restarts) runs one step at a time through an internal queue, as an
 * OTP supervisor handles one message at a time: a DOWN that arrives during a restart waits.
 *
 * @example
 * const sup = await new Supervisor({
 *   id: 'root', strategy: 'one_for_one', maxRestarts: 5, periodMs: 10_000,
 *   children: [machineChild({ id: 'audit', logic: auditMachine })],
 * }).start();
 * await sup.shutdown('infinity');
 */
export class Supervisor extends Actor {
  readonly spec: Required<Omit<SupervisorSpec, 'children' | 'type'>>;
  readonly log: Logger;
  readonly #baseLog: Logger;
  readonly #children: ChildTable;
  readonly #lifecycle = createActor(supervisorMachine);
  readonly #window: RestartWindow;
  #queue: Promise<void> = Promise.resolve();
  #started: Promise<this> | undefined;

  constructor(spec: SupervisorSpec, opts: SupervisorOptions = {}) {
    // Checked before super(): the base constructor puts the actor in the live set, and a rejected
    // spec must leave nothing behind.
    Supervisor.check(spec);
    super(spec.id, spec.type ?? 'supervisor', opts.parent);
    this.spec = {
      id: spec.id,
      strategy: spec.strategy ?? 'one_for_one',
      maxRestarts: spec.maxRestarts ?? 1,
      periodMs: spec.periodMs ?? 5_000,
    };
    this.#baseLog = opts.log ?? pino({ level: 'silent' });
    this.log = this.#baseLog.child({ actorId: spec.id, actorType: this.type });
    const clock = opts.clock ?? systemClock;
    this.#window = new RestartWindow(this.spec.maxRestarts, this.spec.periodMs, clock);
    this.#children = new ChildTable(spec.children, clock);
    this.#lifecycle.subscribe({ error: (err) => this.log.error({ err }, 'supervisor lifecycle failed') });
    this.#lifecycle.start();
  }

  /** Checks a spec before anything starts (OTP `check_childspecs`); throws `GH_ERR_SUPERVISOR_SPEC`. */
  static check(spec: SupervisorSpec): void {
    checkSupervisorSpec(spec);
  }

  static checkChild(name: string, c: ChildSpec, i: number | string, seen: Set<string>): void {
    checkChildSpec(name, c, i, seen);
  }

  get state(): string {
    return this.#lifecycle.getSnapshot().value as string;
  }

  override children(): Iterable<Actor> {
    return this.#children.actors();
  }

  override describe(): Record<string, unknown> {
    return { strategy: this.spec.strategy };
  }

  /** The live child with this id. */
  child(id: string): Actor | undefined {
    return this.#children.find(id)?.actor;
  }

  /** Child ids in start order, with their current actors (OTP `which_children`); `failed` for a child that gave up on its own intensity. */
  whichChildren(): ChildInfo[] {
    return this.#children.which();
  }

  /** The tree, with a child that gave up on its own intensity listed in its place as `failed`. */
  override tree(opts: TreeOptions = {}, level = 0): TreeNode {
    return withFailedChildren(super.tree(opts, level), this.#children.slots, opts, level);
  }

  /**
   * Starts every child in order. On a failed start, stops those started, in reverse, and throws
   * `GH_ERR_CHILD_START`. Idempotent. A supervisor asked to stop first starts nothing.
   */
  start(): Promise<this> {
    this.#started ??= this.#start();
    return this.#started;
  }

  async #start(): Promise<this> {
    await this.#run(async () => {
      for (const slot of this.#children.slots) {
        // Asked to stop meanwhile: the queued stop takes over from here.
        if (this.status !== 'starting') return;
        try {
          await this.#startSlot(slot);
        } catch (err) {
          if (slot.window) {
            // A crash of that child alone; when a stop came meanwhile, the loop ends next turn.
            if (this.status === 'starting') this.#startCrashed(slot, err);
            continue;
          }
          this.#report('start_error', String(err), slot, { err });
          await this.#stopAll();
          this.#send({ type: 'sup.fail' });
          const e = new ChildStartError(this.id, slot.spec.id, { cause: err });
          this.exit('error', e);
          throw e;
        }
      }
      this.#send({ type: 'sup.started' });
      this.markRunning();
    });
    return this;
  }

  /**
   * Adds and starts a child (OTP `start_child`): a new id goes last, an id this supervisor held
   * before goes back to its place in the spec order. Rejects with `GH_ERR_SUPERVISOR_SPEC` or
   * `GH_ERR_CHILD_START`; a child with its own intensity whose start fails is a crash instead
   * (kept and restarted), and the promise resolves with undefined.
   */
  async startChild(spec: ChildSpec): Promise<Actor | undefined> {
    Supervisor.checkChild(this.id, spec, spec?.id ?? '(child)', new Set());
    checkIsolation(this.id, this.spec.strategy, spec, spec.id);
    return this.#run(async () => {
      // Checked in the queue, so that two concurrent calls with one id cannot both pass.
      Supervisor.checkChild(this.id, spec, spec.id, new Set(this.#children.slots.map((s) => s.spec.id)));
      if (this.#halting()) {
        throw new ChildStartError(this.id, spec.id, { cause: new Error(`supervisor ${this.id} is ${this.status}`) });
      }
      const slot = this.#children.add(spec);
      try {
        return await this.#startSlot(slot);
      } catch (err) {
        if (slot.window && !this.#halting() && this.status !== 'exited') {
          this.#startCrashed(slot, err);
          return undefined;
        }
        this.#children.delete(slot);
        throw new ChildStartError(this.id, spec.id, { cause: err });
      }
    });
  }

  /** Stops a child and removes its spec (OTP `terminate_child` + `delete_child`). */
  async removeChild(id: string): Promise<boolean> {
    return this.#run(async () => {
      const slot = this.#children.take(id);
      if (!slot) return false;
      await this.#stopSlot(slot);
      return true;
    });
  }

  /**
   * Takes a child out of the supervisor without stopping it: its spec is deleted and its exit no
   * longer concerns this supervisor. The caller owns the actor from then on (a listener moved to
   * a new address drains in the background, without holding this supervisor's queue).
   *
   * @example
   * const old = await sup.detachChild('listener:web');
   * void old?.shutdown(30_000);
   */
  async detachChild(id: string): Promise<Actor | undefined> {
    return this.#run(async () => {
      const slot = this.#children.detach(id);
      if (!slot) return undefined;
      const actor = slot.actor;
      slot.actor = undefined;
      return actor;
    });
  }

  /**
   * Resolves once the work queued so far (starts, restarts, stops) is done: a barrier, like a
   * `sys:get_state` call on an OTP supervisor. A DOWN handled before the call is acted upon by then.
   *
   * @example
   * worker.send({ type: 'crash' });
   * await sup.settled(); // the restart has happened (or the supervisor gave up)
   */
  settled(): Promise<void> {
    return this.#run(async () => {});
  }

  #run<T>(work: () => Promise<T>): Promise<T> {
    const p = this.#queue.then(work);
    this.#queue = p.then(
      () => {},
      () => {},
    );
    return p;
  }

  /** Stopping or gone: no more starts or restarts. */
  #halting(): boolean {
    return this.status === 'stopping' || this.status === 'exited';
  }

  /** Sends to the lifecycle actor unless it already stopped (xstate warns about sends to stopped actors). */
  #send(event: SupervisorEvent): void {
    if (this.status !== 'exited') this.#lifecycle.send(event);
  }

  /** An OTP supervisor report (`?report_error`): what went wrong (`errorContext`), why, and with which child. */
  #report(errorContext: string, reason: string, offender: Slot, extra: Record<string, unknown> = {}): void {
    this.log.error({ supervisor: this.id, errorContext, reason, offender: offender.spec.id, ...extra }, 'supervisor report');
  }

  /** A child with its own intensity failed to start: a crash, restarted (and counted) after the current step. */
  #startCrashed(slot: Slot, err: unknown): void {
    this.#report('start_error', String(err), slot, { err });
    this.#queueRestart(slot);
  }

  async #startSlot(slot: Slot): Promise<Actor> {
    const { spec } = slot;
    const actor = await spec.start({ id: spec.id, parent: this, restarts: slot.restarts, log: this.#baseLog });
    if (this.status === 'exited') {
      // Killed while the child was starting: nobody would ever stop it.
      actor.kill();
      throw new Error(`supervisor ${this.id} exited while ${spec.id} was starting`);
    }
    if (actor.status === 'exited' && !isCleanExit(actor.exitReason ?? 'noproc')) {
      // It crashed in its own start (an entry action threw): that is a failed start, as in OTP
      // when init/1 fails, not a running child.
      throw actor.exitError ?? new Error(`child ${spec.id} exited at start (${actor.exitReason})`);
    }
    actor.parent = this;
    actor.restarts = slot.restarts;
    slot.actor = actor;
    slot.stopping = false;
    if (actor.status === 'exited') {
      // Finished at once (a final initial state): handled as its real exit, not as `noproc`.
      const down: Down = { type: 'DOWN', ref: 0, id: actor.id, actorType: actor.type, reason: actor.exitReason ?? 'normal' };
      queueMicrotask(() => this.#onChildDown(slot, actor, down));
    } else {
      actor.monitor((down) => this.#onChildDown(slot, actor, down));
    }
    return actor;
  }

  async #stopSlot(slot: Slot): Promise<void> {
    const actor = slot.actor;
    if (!actor) return;
    slot.stopping = true;
    const wasLive = actor.status !== 'exited';
    const spec = slot.spec.shutdown;
    const timeout = (typeof spec === 'function' ? spec() : spec) ?? (slot.spec.supervisor || actor instanceof Supervisor ? 'infinity' : 5_000);
    const down = await actor.shutdown(timeout);
    if (wasLive && down.reason === 'killed' && timeout !== 'brutal') {
      this.#report('shutdown_error', 'killed', slot, { shutdownMs: timeout });
    }
    if (slot.actor === actor) slot.actor = undefined;
  }

  async #stopAll(): Promise<void> {
    const slots = this.#children.slots;
    for (let i = slots.length - 1; i >= 0; i--) await this.#stopSlot(slots[i]!);
  }

  #onChildDown(slot: Slot, actor: Actor, down: Down): void {
    if (slot.actor !== actor) return;
    if (slot.stopping || this.status === 'stopping' || this.status === 'exited') return;
    slot.actor = undefined;
    const restart = slot.spec.restart ?? 'permanent';
    const abnormal = !isCleanExit(down.reason);
    if (abnormal) this.#report('child_terminated', down.reason, slot, { err: down.error });
    if (restart === 'temporary') {
      this.#children.delete(slot);
      return;
    }
    if (restart === 'transient' && !abnormal) return;
    this.#queueRestart(slot);
  }

  #queueRestart(slot: Slot): void {
    void this.#run(() => this.#restart(slot)).catch((err) => this.log.error({ err }, 'supervisor restart failed'));
  }

  async #restart(slot: Slot): Promise<void> {
    if (this.#halting() || !this.#children.has(slot)) return;
    // Restarted meanwhile by a one_for_all/rest_for_one restart of a sibling: this DOWN is stale
    // (OTP ignores an EXIT from a pid it no longer holds).
    if (slot.actor || slot.failed) return;
    if (slot.window) {
      if (slot.window.hit()) {
        this.#childGivesUp(slot);
        return;
      }
    } else if (this.#window.hit()) {
      await this.#giveUp(slot);
      return;
    }
    this.#send({ type: 'sup.restarting' });
    const group = this.#children.restartGroup(slot, this.spec.strategy);
    for (let i = group.length - 1; i >= 0; i--) {
      const s = group[i]!;
      if (s !== slot && s.actor) await this.#stopSlot(s);
    }
    // A temporary sibling stopped by the supervisor is not restarted (OTP removes it); one that
    // ended on its own during the stops above is gone already (`delete` leaves it alone).
    const toRestart = group.filter((s) => s === slot || (s.spec.restart ?? 'permanent') !== 'temporary');
    for (const s of group) if (!toRestart.includes(s)) this.#children.delete(s);
    for (const s of toRestart) {
      if (s.actor) continue;
      if (this.#halting()) break;
      s.restarts++;
      // Every attempt counts, also one that fails in its start (gatehouse_actor_restarts_total).
      channels.restart.publish({ supervisor: this.id, child: s.spec.id, restarts: s.restarts });
      try {
        const a = await this.#startSlot(s);
        emitActorEvent({ type: 'restart', id: a.id, actorType: a.type, supervisor: this.id, restarts: s.restarts });
        this.log.warn({ supervisor: this.id, child: s.spec.id, restarts: s.restarts }, 'child restarted');
      } catch (err) {
        if ((this.status as string) === 'exited') return;
        // OTP tries again, and each try counts toward the intensity.
        this.#report('start_error', String(err), s, { err });
        this.#queueRestart(s);
        break;
      }
    }
    this.#send({ type: 'sup.restarted' });
  }

  /** A child past its own intensity: it alone stays down, listed as failed (the supervisor goes on). */
  #childGivesUp(slot: Slot): void {
    const w = slot.window!;
    slot.failed = true;
    this.#report('child_gave_up', 'reached_max_restart_intensity', slot, { maxRestarts: w.maxRestarts, periodMs: w.periodMs });
    channels.intensity.publish({ supervisor: this.id, offender: slot.spec.id });
    emitActorEvent({ type: 'state', id: slot.spec.id, actorType: slot.spec.type ?? 'actor', state: 'failed' });
  }

  async #giveUp(offender: Slot): Promise<void> {
    const err = new SupervisorIntensityError(this.id, this.spec.maxRestarts, this.spec.periodMs);
    this.#report('shutdown', 'reached_max_restart_intensity', offender);
    channels.intensity.publish({ supervisor: this.id, offender: offender.spec.id });
    this.status = 'stopping';
    await this.#stopAll();
    this.#send({ type: 'sup.fail' });
    this.exit('error', err);
  }

  protected requestStop(): boolean {
    this.#send({ type: 'sup.stop' });
    void this.#run(async () => {
      await this.#stopAll();
      this.#send({ type: 'sup.stopped' });
      this.exit('shutdown');
    });
    return true;
  }

  protected forceStop(): void {
    const slots = this.#children.slots;
    for (let i = slots.length - 1; i >= 0; i--) {
      const s = slots[i]!;
      s.stopping = true;
      s.actor?.kill();
      s.actor = undefined;
    }
    this.#send({ type: 'sup.fail' });
  }

  protected override exit(reason: ExitReason, error?: unknown): void {
    if (this.status === 'exited') return;
    super.exit(reason, error);
    this.#lifecycle.stop();
  }
}

/**
 * A child spec for a sub-supervisor.
 *
 * @example
 * supervisorChild({ id: 'upstreams', strategy: 'one_for_one', children: [] }, { log })
 */
export function supervisorChild(spec: SupervisorSpec, opts: Omit<SupervisorOptions, 'parent'> = {}, restart: RestartType = 'permanent'): ChildSpec {
  // Checked now, so that a bad nested spec is rejected while the outer tree is built, before anything starts.
  Supervisor.check(spec);
  return {
    id: spec.id,
    restart,
    supervisor: true,
    shutdown: 'infinity',
    start: ({ parent, log }) => new Supervisor(spec, { ...opts, log: opts.log ?? log, parent }).start(),
  };
}
