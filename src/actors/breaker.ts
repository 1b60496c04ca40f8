import { assign, setup } from 'xstate';
import type { Logger } from 'pino';
import { B, type StateTable } from '../workers/state-table.ts';

/** Breaker values in the state table (and `gatehouse_breaker_state`). */
export const BREAKER = { CLOSED: 0, OPEN: 1, HALF_OPEN: 2 } as const;

export interface BreakerInput {
  table: StateTable;
  /** The backend's row in the state table. */
  slot: number;
  backend: string;
  failureThreshold: number;
  successThreshold: number;
  openForMs: number;
  /**
   * How long a half-open trial may stay unanswered before a new permit is issued: the shard
   * holding it may have died with it (a connect attempt itself ends by `connectTimeout`).
   */
  trialTimeoutMs: number;
  log: Logger;
}

interface BreakerContext extends BreakerInput {
  successes: number;
}

/**
 * What shards report about a backend (only rare events cross threads):
 * `failures` when its consecutive-failure count reached the threshold, and the outcome of a
 * half-open trial connection.
 */
export type BreakerEvent = { type: 'failures' } | { type: 'trial.ok' } | { type: 'trial.failed' } | { type: 'trial.aborted' };

/**
 * A backend's circuit breaker (closed, open, half_open), the single writer of its `BREAKER` and
 * `PERMIT` cells in the state table.
 *
 * - closed: shards count consecutive failed connects in the table (`FAILS`; a success resets
 *   it). The shard whose failure reaches `failureThreshold` sends `failures`; the breaker checks
 *   the count again (a success may have come in between: failures must be consecutive) and opens.
 * - open: balancers skip the backend. After `openFor` it half-opens.
 * - half_open: one permit is published; exactly one shard takes it with compare-and-swap and its
 *   connection is the trial. `successThreshold` successful trials in a row close the breaker;
 *   a failed trial opens it again for another `openFor`.
 *
 * The state lives in the table, not only in the machine: a restarted breaker starts in the state
 * the table holds (`boot`), so a crash neither closes an open breaker nor opens a closed one.
 *
 * @example
 * new MachineActor({ id: 'breaker:app/127.0.0.1:9001', type: 'breaker', logic: breakerMachine, input }).start();
 */
export const breakerMachine = setup({
  types: { context: {} as BreakerContext, input: {} as BreakerInput, events: {} as BreakerEvent },
  guards: {
    bootOpen: ({ context: c }) => c.table.backendGet(c.slot, B.BREAKER) === BREAKER.OPEN,
    bootHalfOpen: ({ context: c }) => c.table.backendGet(c.slot, B.BREAKER) === BREAKER.HALF_OPEN,
    tripped: ({ context: c }) => c.table.backendGet(c.slot, B.FAILS) >= c.failureThreshold,
    recovered: ({ context: c }) => c.successes + 1 >= c.successThreshold,
  },
  actions: {
    publishOpen: ({ context: c }) => {
      c.table.backendSet(c.slot, B.PERMIT, 0);
      c.table.backendSet(c.slot, B.BREAKER, BREAKER.OPEN);
    },
    // The permit is published before the state, so a shard that sees half_open finds it.
    publishHalfOpen: ({ context: c }) => {
      c.table.backendSet(c.slot, B.PERMIT, 1);
      c.table.backendSet(c.slot, B.BREAKER, BREAKER.HALF_OPEN);
      c.log.info({ backend: c.backend }, 'circuit breaker half-open: one trial connection allowed');
    },
    publishClosed: ({ context: c }) => {
      c.table.backendSet(c.slot, B.FAILS, 0);
      c.table.backendSet(c.slot, B.BREAKER, BREAKER.CLOSED);
      c.table.backendSet(c.slot, B.PERMIT, 0);
      c.log.info({ backend: c.backend }, 'circuit breaker closed');
    },
    issuePermit: ({ context: c }) => c.table.backendSet(c.slot, B.PERMIT, 1),
    logOpened: ({ context: c }) =>
      c.log.warn({ backend: c.backend, failures: c.table.backendGet(c.slot, B.FAILS), openForMs: c.openForMs }, 'circuit breaker opened'),
    logReopened: ({ context: c }) => c.log.warn({ backend: c.backend, openForMs: c.openForMs }, 'circuit breaker trial failed: open again'),
    resetSuccesses: assign({ successes: 0 }),
    countSuccess: assign({ successes: ({ context }) => context.successes + 1 }),
  },
  delays: {
    openFor: ({ context }) => context.openForMs,
    trialTimeout: ({ context }) => context.trialTimeoutMs,
  },
}).createMachine({
  id: 'breaker',
  context: ({ input }) => ({ ...input, successes: 0 }),
  initial: 'boot',
  states: {
    boot: {
      always: [
        { guard: 'bootOpen', target: 'open' },
        { guard: 'bootHalfOpen', target: 'half_open' },
        { target: 'closed' },
      ],
    },
    closed: {
      // Published before the log line: whoever reads the log finds the table already open.
      on: { failures: { guard: 'tripped', target: 'open', actions: ['publishOpen', 'logOpened'] } },
    },
    open: {
      entry: ['publishOpen', 'resetSuccesses'],
      after: { openFor: { target: 'half_open', actions: 'publishHalfOpen' } },
    },
    half_open: {
      // A permit lost with a dead shard (or a stuck trial) is issued again.
      after: { trialTimeout: { target: 'half_open', reenter: true, actions: 'issuePermit' } },
      on: {
        'trial.ok': [
          { guard: 'recovered', target: 'closed', actions: 'publishClosed' },
          { target: 'half_open', reenter: true, actions: ['countSuccess', 'issuePermit'] },
        ],
        'trial.failed': { target: 'open', actions: ['publishOpen', 'logReopened'] },
        'trial.aborted': { target: 'half_open', reenter: true, actions: 'issuePermit' },
      },
    },
  },
});
