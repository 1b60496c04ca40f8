// Everything comes from Gatehouse's public API, xstate's building blocks included: the actor then
// uses the same xstate as the runtime that runs it, and needs no dependency of its own.
import { assign, defineActor, fromCallback, setup, type GatewayEvent } from '../../src/index.ts';

interface CounterOptions {
  /** How often to log a summary, in milliseconds (default 10000). Options are not unit-parsed. */
  intervalMs?: number;
}

interface CounterContext {
  /** Connections closed since the actor started. */
  total: number;
  /** Connections closed since the last summary, by exit reason (`normal`, `killed`, ...). */
  window: Record<string, number>;
}

type CounterEvent = { type: 'counter.closed'; reason: string } | { type: 'gh.shutdown' };

/**
 * Counts `connection.closed` gateway events and logs a summary every `intervalMs`: a worked
 * example of a custom actor (docs/extending.md). The subscription to `ctx.events$` lives in an
 * invoked callback actor, whose disposer unsubscribes whatever ends the actor; the periodic tick
 * is a delayed (`after`) transition, so xstate owns the timer; `gh.shutdown` logs a last summary
 * and reaches the final state, which is how the actor stops gracefully.
 */
export default defineActor<CounterOptions>({
  name: 'connection-counter',
  logic: (ctx) => {
    const intervalMs = ctx.options.intervalMs ?? 10_000;
    if (!(Number.isInteger(intervalMs) && intervalMs > 0)) {
      // A bad option fails the actor's start, with an error naming the actor: at daemon start
      // the daemon exits 1; on a reload the reload fails (docs/extending.md, "Options").
      throw new TypeError(`connection-counter: options.intervalMs must be a positive integer, got ${String(intervalMs)}`);
    }

    // Acquires one thing (the subscription) and releases it in its disposer.
    const gatewayEvents = fromCallback<{ type: 'noop' }>(({ sendBack }) => {
      const sub = ctx.events$.subscribe((e: GatewayEvent) => {
        if (e.type === 'connection.closed') sendBack({ type: 'counter.closed', reason: e.reason });
      });
      return () => sub.unsubscribe();
    });

    const summary = (c: CounterContext): Record<string, unknown> => {
      const closed = Object.values(c.window).reduce((a, b) => a + b, 0);
      return { closed, byReason: c.window, total: c.total, intervalMs };
    };

    return setup({
      types: { context: {} as CounterContext, events: {} as CounterEvent },
      actors: { gatewayEvents },
      delays: { interval: intervalMs },
      actions: {
        count: assign(({ context, event }) => {
          const reason = event.type === 'counter.closed' ? event.reason : 'unknown';
          return { total: context.total + 1, window: { ...context.window, [reason]: (context.window[reason] ?? 0) + 1 } };
        }),
        logSummary: ({ context }) => ctx.log.info(summary(context), 'connection summary'),
        resetWindow: assign({ window: () => ({}) }),
        logFinal: ({ context }) => ctx.log.info(summary(context), 'connection counter stopping'),
      },
    }).createMachine({
      id: 'connectionCounter',
      context: { total: 0, window: {} },
      invoke: { src: 'gatewayEvents' },
      initial: 'counting',
      states: {
        counting: {
          // Re-entering restarts the delayed transition: one summary per interval.
          after: { interval: { target: 'counting', reenter: true, actions: ['logSummary', 'resetWindow'] } },
          on: {
            'counter.closed': { actions: 'count' },
            'gh.shutdown': { target: 'stopped', actions: 'logFinal' },
          },
        },
        stopped: { type: 'final' },
      },
    });
  },
});
