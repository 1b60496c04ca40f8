import { assign, setup } from 'xstate';
import type { Registration } from './service.ts';

export interface ServiceMachineInput {
  registration: Registration;
}

interface ServiceContext {
  registration: Registration;
  /** Epoch ms when the entry expires without a heartbeat; 0 when it never does. */
  expiresAt: number;
}

/** What the registry sends an instance's actor. */
export type ServiceEvent = { type: 'heartbeat' } | { type: 'update'; registration: Registration } | { type: 'deregister' } | { type: 'gh.shutdown' };

/**
 * One registered service instance and its TTL timer (Consul's TTL check as an actor).
 *
 * - `alive`: registered; with a `ttl`, it expires `ttl` after entering. A heartbeat or an update
 *   enters it again, which restarts the timer.
 * - `expired`, `deregistered`: final; the actor exits `normal` and its DOWN removes the entry
 *   from every index of the registry. The registry tells which by the final state.
 * - `stopped`: final, on the daemon's shutdown (no event is published for it).
 *
 * @example
 * new MachineActor({ id: 'service:app-1', type: 'service', logic: serviceMachine, input: { registration } }).start();
 */
export const serviceMachine = setup({
  types: { context: {} as ServiceContext, input: {} as ServiceMachineInput, events: {} as ServiceEvent },
  guards: {
    expires: ({ context }) => context.registration.ttl > 0,
  },
  delays: {
    ttl: ({ context }) => context.registration.ttl,
  },
  actions: {
    stamp: assign({ expiresAt: ({ context }) => (context.registration.ttl > 0 ? Date.now() + context.registration.ttl : 0) }),
    replace: assign({ registration: ({ context, event }) => (event.type === 'update' ? event.registration : context.registration) }),
  },
}).createMachine({
  id: 'service',
  context: ({ input }) => ({ registration: input.registration, expiresAt: 0 }),
  initial: 'alive',
  states: {
    alive: {
      entry: 'stamp',
      after: { ttl: { guard: 'expires', target: 'expired' } },
      on: {
        heartbeat: { target: 'alive', reenter: true },
        update: { target: 'alive', reenter: true, actions: 'replace' },
        deregister: 'deregistered',
        'gh.shutdown': 'stopped',
      },
    },
    expired: { type: 'final' },
    deregistered: { type: 'final' },
    stopped: { type: 'final' },
  },
});
