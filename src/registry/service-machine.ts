import { assign, setup } from 'xstate';
import type { Registration } from './service.ts';

export interface ServiceMachineInput {
  registration: Registration;
  /** Epoch ms of the expiry when it is decided elsewhere (cluster mode: Redis's); default now + ttl. */
  expiresAt?: number;
  /** How long after `expiresAt` the actor's own timer fires (default 0). */
  slack?: number;
}

interface ServiceContext {
  registration: Registration;
  /** Epoch ms when the entry expires without a heartbeat; 0 when it never does. */
  expiresAt: number;
  /** The own timer fires this long after `expiresAt`: in cluster mode Redis expires the entry first. */
  slack: number;
}

/**
 * What the registry sends an instance's actor. `expiresAt` on a heartbeat or an update sets the
 * expiry as decided elsewhere (else now + ttl); `slack` moves the own timer and keeps the expiry;
 * `expire` ends it as expired now.
 */
export type ServiceEvent =
  | { type: 'heartbeat'; expiresAt?: number }
  | { type: 'update'; registration: Registration; expiresAt?: number }
  | { type: 'slack'; ms: number }
  | { type: 'expire' }
  | { type: 'deregister' }
  | { type: 'gh.shutdown' };

const fresh = (r: Registration): number => (r.ttl > 0 ? Date.now() + r.ttl : 0);

/**
 * One registered service instance and its TTL timer (Consul's TTL check as an actor).
 *
 * - `alive`: registered; with a `ttl`, it expires at `expiresAt` (+ `slack`). A heartbeat or an
 *   update enters it again, which restarts the timer.
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
    expires: ({ context }) => context.registration.ttl > 0 && context.expiresAt > 0,
  },
  delays: {
    ttl: ({ context }) => Math.max(0, context.expiresAt + context.slack - Date.now()),
  },
  actions: {
    stamp: assign({
      expiresAt: ({ context, event }) => {
        if (event.type === 'slack') return context.expiresAt;
        if ((event.type === 'heartbeat' || event.type === 'update') && event.expiresAt !== undefined) return event.expiresAt;
        return fresh(context.registration);
      },
    }),
    replace: assign({ registration: ({ context, event }) => (event.type === 'update' ? event.registration : context.registration) }),
    setSlack: assign({ slack: ({ context, event }) => (event.type === 'slack' ? event.ms : context.slack) }),
  },
}).createMachine({
  id: 'service',
  context: ({ input }) => ({ registration: input.registration, expiresAt: input.expiresAt ?? fresh(input.registration), slack: input.slack ?? 0 }),
  initial: 'alive',
  states: {
    alive: {
      after: { ttl: { guard: 'expires', target: 'expired' } },
      on: {
        heartbeat: { target: 'alive', reenter: true, actions: 'stamp' },
        update: { target: 'alive', reenter: true, actions: ['replace', 'stamp'] },
        slack: { target: 'alive', reenter: true, actions: 'setSlack' },
        expire: 'expired',
        deregister: 'deregistered',
        'gh.shutdown': 'stopped',
      },
    },
    expired: { type: 'final' },
    deregistered: { type: 'final' },
    stopped: { type: 'final' },
  },
});
