import type { Actor } from './actor.ts';

/**
 * Every actor that has been created and has not exited, in this thread. The leak check reads it,
 * and `gatehouse_actors{type}` counts it. One Set add and delete per actor: cheap enough for
 * connection-grade actors.
 */
class LiveActors {
  readonly #all = new Set<Actor>();
  readonly #byType = new Map<string, number>();

  add(a: Actor): void {
    this.#all.add(a);
    this.#byType.set(a.type, (this.#byType.get(a.type) ?? 0) + 1);
  }

  delete(a: Actor): void {
    if (!this.#all.delete(a)) return;
    const n = (this.#byType.get(a.type) ?? 1) - 1;
    if (n === 0) this.#byType.delete(a.type);
    else this.#byType.set(a.type, n);
  }

  get size(): number {
    return this.#all.size;
  }

  /** Live actor counts by type. */
  countsByType(): Record<string, number> {
    return Object.fromEntries(this.#byType);
  }

  list(): Actor[] {
    return [...this.#all];
  }
}

/** The live actors of this thread. */
export const live = new LiveActors();
