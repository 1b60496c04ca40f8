/**
 * Gatehouse's public API for code that extends it: custom actors, and the runtime primitives a
 * custom actor may use.
 */
export { defineActor, type ActorContext, type ActorDefinition, type GatewayEvent } from './actors/custom.ts';
export { Actor, type Down, type ExitReason, type TreeNode } from './runtime/actor.ts';
export { MachineActor, SHUTDOWN_EVENT } from './runtime/machine-actor.ts';
export { Registry } from './runtime/registry.ts';
export { Supervisor, machineChild, supervisorChild, type ChildSpec, type SupervisorSpec } from './supervisors/supervisor.ts';
export { GatehouseError } from './errors.ts';
/**
 * The xstate v5 building blocks for custom actors, re-exported so that an actor module needs
 * nothing but Gatehouse (and uses the same xstate instance as the runtime that runs it).
 */
export { setup, createMachine, fromCallback, fromPromise, fromObservable, fromTransition, assign, sendTo, raise, emit, enqueueActions, log } from 'xstate';
