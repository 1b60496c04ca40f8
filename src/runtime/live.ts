import type { Actor } from './actor.ts';

/**
 * Every actor that has been created and has not exited, in this thread. The leak check reads it,
 * and `gatehouse_actors{type}` counts it. A dense array with each actor's place kept on the actor
 * (removal moves the last one into the hole), not a Set: a long-lived Set with an add and a
 * delete per connection keeps everything it held alive through scavenges until the next full GC
 * (see registry.ts). One push and one pop per actor.
 */
class LiveActors {
  readonly #all: Actor[] = [];
  readonly #byType = new Map<string, number>();

  add(a: Actor): void {
    if (a.liveIx >= 0) return;
    a.liveIx = this.#all.length;
    this.#all.push(a);
    this.#byType.set(a.type, (this.#byType.get(a.type) ?? 0) + 1);
  }

  delete(a: Actor): void {
    const i = a.liveIx;
    if (i < 0 || this.#all[i] !== a) return;
    const last = this.#all.pop()!;
    if (last !== a) {
      this.#all[i] = last;
      last.liveIx = i;
    }
    a.liveIx = -1;
    const n = (this.#byType.get(a.type) ?? 1) - 1;
    if (n === 0) this.#byType.delete(a.type);
    else this.#byType.set(a.type, n);
  }

  get size(): number {
    return this.#all.length;
  }

  /** Live actor counts by type. */
  countsByType(): Record<string, number> {
    return Object.fromEntries(this.#byType);
  }

  list(): Actor[] {
    return this.#all.slice();
  }
}

/** The live actors of this thread. */
export const live = new LiveActors();
