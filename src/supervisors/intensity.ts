/**
 * Restart intensity (OTP `MaxR` restarts in `MaxT`) as a sliding window, how a child that went
 * past its own intensity is listed, and the spec order a supervisor keeps its children in. All
 * bookkeeping for `supervisor.ts`.
 */
import type { Clock } from '../runtime/clock.ts';
import type { Actor, TreeNode, TreeOptions } from '../runtime/actor.ts';
import type { ChildSpec } from './child-spec.ts';

/**
 * A sliding window of restart times. `hit()` records a restart and says whether it went over
 * the limit: more than `maxRestarts` within the last `periodMs`.
 *
 * @example
 * const w = new RestartWindow(3, 5_000, systemClock);
 * if (w.hit()) giveUp();
 */
export class RestartWindow {
  readonly maxRestarts: number;
  readonly periodMs: number;
  readonly #clock: Clock;
  #times: number[] = [];

  constructor(maxRestarts: number, periodMs: number, clock: Clock) {
    this.maxRestarts = maxRestarts;
    this.periodMs = periodMs;
    this.#clock = clock;
  }

  /** Records a restart now; true when that is one too many. */
  hit(): boolean {
    const now = this.#clock.now();
    this.#times = this.#times.filter((t) => now - t < this.periodMs);
    this.#times.push(now);
    return this.#times.length > this.maxRestarts;
  }
}

/**
 * Every child id a supervisor has held, in spec order. A child added again after it was removed
 * (a temporary child that ended, `removeChild` then `startChild` on a reload) goes back to its
 * place, so start and stop order come from the spec and never from restart history.
 *
 * @example
 * const order = new SpecOrder(['admin', 'actors', 'shards']);
 * order.insertAt(['admin', 'shards'], 'actors'); // 1
 */
export class SpecOrder {
  readonly #ids: string[];

  constructor(ids: string[]) {
    this.#ids = [...ids];
  }

  /** Where `id` goes among `current` (ids in order): after every id that precedes it in the spec. New ids go last. */
  insertAt(current: string[], id: string): number {
    const rank = this.#ids.indexOf(id);
    if (rank < 0) {
      this.#ids.push(id);
      return current.length;
    }
    let at = 0;
    for (let i = 0; i < current.length; i++) {
      const r = this.#ids.indexOf(current[i]!);
      if (r >= 0 && r < rank) at = i + 1;
    }
    return at;
  }

  /** Forgets an id (a detached child, such as a moved listener): a later child of that id is a new one. */
  forget(id: string): void {
    const i = this.#ids.indexOf(id);
    if (i >= 0) this.#ids.splice(i, 1);
  }
}

/**
 * A supervisor's tree node with its failed children (gave up on their own intensity) listed in
 * their places, as `{ state: 'failed', status: 'failed' }`. `node` lists the live children in
 * slot order, some perhaps filtered out: both lists are walked together.
 *
 * @example
 * override tree(opts = {}, level = 0) { return withFailedChildren(super.tree(opts, level), this.#slots, opts, level); }
 */
export function withFailedChildren(
  node: TreeNode,
  slots: readonly { spec: ChildSpec; actor: Actor | undefined; restarts: number; failed: boolean }[],
  opts: TreeOptions,
  level: number,
): TreeNode {
  const failed = slots.filter((s) => s.failed).length;
  if (failed === 0) return node;
  if (opts.depth !== undefined && level >= opts.depth) {
    node.truncated = (node.truncated ?? 0) + failed;
    return node;
  }
  const live = node.children;
  const merged: TreeNode[] = [];
  let k = 0;
  for (const s of slots) {
    if (s.failed) {
      const type = s.spec.type ?? 'actor';
      if (!opts.type || opts.type === type) merged.push({ id: s.spec.id, type, state: 'failed', status: 'failed', restarts: s.restarts, children: [] });
    } else if (s.actor && live[k]?.id === s.actor.id) {
      merged.push(live[k++]!);
    }
  }
  merged.push(...live.slice(k));
  node.children = merged;
  return node;
}
