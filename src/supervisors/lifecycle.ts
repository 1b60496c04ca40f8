/** A supervisor's own lifecycle, as an xstate machine, and OTP's notion of a clean exit. */
import { setup } from 'xstate';
import type { ExitReason } from '../runtime/actor.ts';

/** What the supervisor tells its lifecycle machine. */
export type SupervisorEvent = { type: 'sup.started' | 'sup.restarting' | 'sup.restarted' | 'sup.stop' | 'sup.stopped' | 'sup.fail' };

/**
 * starting, running, restarting, stopping, then stopped or failed (both final).
 *
 * @example
 * const lifecycle = createActor(supervisorMachine).start();
 * lifecycle.send({ type: 'sup.started' });
 */
export const supervisorMachine = setup({
  types: { events: {} as SupervisorEvent },
}).createMachine({
  id: 'supervisor',
  initial: 'starting',
  states: {
    starting: { on: { 'sup.started': 'running', 'sup.fail': 'failed', 'sup.stop': 'stopping' } },
    running: { on: { 'sup.restarting': 'restarting', 'sup.stop': 'stopping', 'sup.fail': 'failed' } },
    restarting: { on: { 'sup.restarted': 'running', 'sup.stop': 'stopping', 'sup.fail': 'failed' } },
    stopping: { on: { 'sup.stopped': 'stopped', 'sup.fail': 'failed' } },
    stopped: { type: 'final' },
    failed: { type: 'final' },
  },
});

/**
 * OTP's clean exits: a transient child that ends with one of these is not restarted.
 *
 * @example
 * isCleanExit('shutdown'); // true
 */
export function isCleanExit(reason: ExitReason): boolean {
  return reason === 'normal' || reason === 'shutdown';
}
