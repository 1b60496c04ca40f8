import type { Observable } from 'rxjs';
import type { Logger } from 'pino';
import { Supervisor, supervisorChild, type ChildSpec } from '../supervisors/supervisor.ts';
import { customActorChild, loadActorModule, moduleVersion, type ActorDefinition, type GatewayEvent } from '../actors/custom.ts';
import type { ActorConfig } from '../config/types.ts';

/**
 * The custom actors' subtree (`actors`, `temporary` under root) and how a reload changes it:
 * which actors changed (entry or module file), starting the changed ones, and putting the
 * previous ones back after a failed reload.
 *
 * @example
 * const actors = new CustomActors(root, events$, log);
 * rootChildren.push(actors.child(await actors.load(config.actors)));
 */
export class CustomActors {
  readonly #root: () => Supervisor;
  readonly #events$: Observable<GatewayEvent>;
  readonly #log: Logger;
  /** The module version each running actor was started with: a reload restarts edited ones. */
  readonly #versions = new Map<string, string>();

  constructor(root: () => Supervisor, events$: Observable<GatewayEvent>, log: Logger) {
    this.#root = root;
    this.#events$ = events$;
    this.#log = log;
  }

  /** Imports every module before anything starts: a missing module fails the start cleanly. */
  static async load(actors: ActorConfig[]): Promise<{ cfg: ActorConfig; def: ActorDefinition }[]> {
    return Promise.all(actors.map(async (cfg) => ({ cfg, def: await loadActorModule(cfg) })));
  }

  /**
   * The `actors` child spec. `temporary` under root: an actor that crash-loops past the `actors`
   * supervisor's intensity takes that subtree down, never the data plane.
   */
  child(loaded: { cfg: ActorConfig; def: ActorDefinition }[]): ChildSpec {
    for (const c of loaded) this.#versions.set(c.cfg.name, moduleVersion(c.cfg));
    return this.#subtree(loaded.map((c) => customActorChild(c.cfg, c.def, this.#events$)));
  }

  #subtree(children: ChildSpec[]): ChildSpec {
    const spec = supervisorChild({ id: 'actors', strategy: 'one_for_one', maxRestarts: 5, periodMs: 10_000, children }, { log: this.#log }, 'temporary');
    return {
      ...spec,
      start: async (ctx) => {
        const sup = await spec.start(ctx);
        sup.monitor((down) => {
          if (down.reason === 'error') this.#log.error({ err: down.error }, 'custom actors gave up: their subtree is stopped, traffic goes on');
        });
        return sup;
      },
    };
  }

  #supervisor(): Supervisor | undefined {
    const sup = this.#root().child('actors') as Supervisor | undefined;
    return sup && sup.status !== 'exited' ? sup : undefined;
  }

  async #spec(a: ActorConfig): Promise<ChildSpec> {
    return customActorChild(a, await loadActorModule(a), this.#events$);
  }

  /** Actors added, or whose entry or module file changed since they were started. */
  changed(prev: ActorConfig[], next: ActorConfig[]): ActorConfig[] {
    return next.filter((a) => {
      const old = prev.find((x) => x.name === a.name);
      return !old || JSON.stringify(old) !== JSON.stringify(a) || this.#versions.get(a.name) !== moduleVersion(a);
    });
  }

  /**
   * Moves the subtree from `prev` to `next`: stops removed and changed actors, starts added and
   * changed ones (or the whole subtree, if it gave up earlier). Returns a commit function to call
   * once the whole reload succeeded; a failed reload calls {@link rollback} instead.
   */
  async apply(prev: ActorConfig[], next: ActorConfig[]): Promise<() => void> {
    const changed = this.changed(prev, next);
    const versions = new Map(next.map((a) => [a.name, moduleVersion(a)]));
    const specs = await Promise.all(changed.map((a) => this.#spec(a)));
    const sup = this.#supervisor();
    if (!sup) {
      // The subtree gave up earlier: a reload brings it back with every actor of the new config.
      await this.#root().startChild(this.#subtree(await Promise.all(next.map((a) => this.#spec(a)))));
    } else {
      for (const a of prev) {
        if (!next.some((x) => x.name === a.name) || changed.some((c) => c.name === a.name)) await sup.removeChild(`actor:${a.name}`);
      }
      for (const spec of specs) await sup.startChild(spec);
    }
    return () => {
      // Only on success: a failed reload leaves the versions the running actors were started with.
      this.#versions.clear();
      for (const [name, v] of versions) this.#versions.set(name, v);
    };
  }

  /** After a failed reload: every actor whose entry differs between the two is put back as in `prev`. */
  async rollback(prev: ActorConfig[], failed: ActorConfig[]): Promise<void> {
    const sup = this.#supervisor();
    if (!sup) return;
    const touched = new Set([...this.changed(prev, failed), ...prev.filter((a) => !failed.some((x) => x.name === a.name))].map((a) => a.name));
    for (const name of touched) await sup.removeChild(`actor:${name}`);
    for (const a of prev) if (touched.has(a.name)) await sup.startChild(await this.#spec(a));
  }
}
