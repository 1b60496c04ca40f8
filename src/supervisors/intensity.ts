/**
 * Restart intensity (OTP `MaxR` restarts in `MaxT`) as a sliding window, and the spec order a
 * supervisor keeps its children in. Both are bookkeeping for `supervisor.ts`.
 */
import type { Clock } from '../runtime/clock.ts';

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
