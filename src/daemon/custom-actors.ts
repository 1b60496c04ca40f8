import type { Observable } from 'rxjs';
import type { Logger } from 'pino';
import { Supervisor, type ChildSpec } from '../supervisors/supervisor.ts';
import { customActorChild, loadActorModule, moduleVersion, type ActorDefinition, type GatewayEvent } from '../actors/custom.ts';
import type { ActorConfig } from '../config/types.ts';

/**
 * The custom actors' subtree (`actors`, a one_for_one supervisor under root) and how a reload
 * changes it. Each custom actor is supervised on its own (its entry's `maxRestarts` in
 * `period`): a crash loop fails that actor alone, which stays listed as `failed` until a reload
 * lists it again; the `actors` supervisor itself never gives up because of one of them.
 *
 * @example
 * const actors = new CustomActors(root, events$, log);
 * rootChildren.push(actors.child(await CustomActors.load(config.actors)));
 */
export class CustomActors {
  readonly #root: () => Supervisor;
  readonly #events$: Observable<GatewayEvent>;
  readonly #log: Logger;
  /** The module version each running actor was started with: a reload restarts edited ones. */
  readonly #versions = new Map<string, string>();
  /** The specs in config order: what the subtree starts with (also when root restarts it). */
  #specs: ChildSpec[] = [];

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
   * The `actors` child spec: permanent, since nothing a custom actor does can make it fail (a
   * throw at start or later is that actor's crash, counted against its own intensity).
   */
  child(loaded: { cfg: ActorConfig; def: ActorDefinition }[]): ChildSpec {
    for (const c of loaded) this.#versions.set(c.cfg.name, moduleVersion(c.cfg));
    this.#specs = loaded.map((c) => customActorChild(c.cfg, c.def, this.#events$));
    return {
      id: 'actors',
      restart: 'permanent',
      supervisor: true,
      shutdown: 'infinity',
      start: ({ parent }) =>
        new Supervisor({ id: 'actors', strategy: 'one_for_one', maxRestarts: 5, periodMs: 10_000, children: [...this.#specs] }, { log: this.#log, parent }).start(),
    };
  }

  async #supervisor(): Promise<Supervisor> {
    const get = () => {
      const sup = this.#root().child('actors') as Supervisor | undefined;
      return sup && sup.status !== 'exited' ? sup : undefined;
    };
    // Being restarted by root: its restart is queued there.
    if (!get()) await this.#root().settled();
    const sup = get();
    if (!sup) throw new Error('the custom actors supervisor is not running');
    return sup;
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
   * changed ones, and starts again every listed actor that is not running (failed, or ended).
   * Each keeps its place in the tree. Returns a commit function to call once the whole reload
   * succeeded; a failed reload calls {@link rollback} instead.
   */
  async apply(prev: ActorConfig[], next: ActorConfig[]): Promise<() => void> {
    const changed = this.changed(prev, next);
    // Modules load before anything stops: one that does not load refuses the reload.
    const specs = new Map(await Promise.all(next.map(async (a) => [a.name, await this.#spec(a)] as const)));
    const sup = await this.#supervisor();
    const again = next.filter((a) => !changed.includes(a) && !sup.child(`actor:${a.name}`));
    for (const a of prev) {
      if (!next.some((x) => x.name === a.name) || changed.some((c) => c.name === a.name)) await sup.removeChild(`actor:${a.name}`);
    }
    for (const a of again) await sup.removeChild(`actor:${a.name}`);
    if (again.length > 0) this.#log.info({ actors: again.map((a) => a.name) }, 'custom actors started again by the reload');
    for (const a of [...changed, ...again]) await sup.startChild(specs.get(a.name)!);
    const versions = new Map(next.map((a) => [a.name, moduleVersion(a)]));
    return () => {
      // Only on success: a failed reload leaves the versions the running actors were started with.
      this.#versions.clear();
      for (const [name, v] of versions) this.#versions.set(name, v);
      this.#specs = next.map((a) => specs.get(a.name)!);
    };
  }

  /** After a failed reload: every actor whose entry differs between the two is put back as in `prev`. */
  async rollback(prev: ActorConfig[], failed: ActorConfig[]): Promise<void> {
    const sup = await this.#supervisor();
    const touched = new Set([...this.changed(prev, failed), ...prev.filter((a) => !failed.some((x) => x.name === a.name))].map((a) => a.name));
    for (const name of touched) await sup.removeChild(`actor:${name}`);
    for (const a of prev) if (touched.has(a.name)) await sup.startChild(await this.#spec(a));
  }
}
