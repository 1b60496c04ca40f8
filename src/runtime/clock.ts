/**
 * Time as actors see it. Injected so that tests drive time-based logic (restart intensity,
 * probes, TTLs) with a simulated clock, as xstate's `SimulatedClock` does.
 *
 * @example
 * const clock = new ManualClock();
 * clock.advance(5_000);
 */
import { performance } from 'node:perf_hooks';

export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => performance.now() };

/** A clock that moves only when told to. */
export class ManualClock implements Clock {
  #t = 0;
  now(): number {
    return this.#t;
  }
  advance(ms: number): void {
    this.#t += ms;
  }
}
