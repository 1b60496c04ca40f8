import { Subject } from 'rxjs';
import diagnostics from 'node:diagnostics_channel';

/** A lifecycle event of the actor tree, streamed by `/actors/events` in debug mode. */
export type ActorEvent =
  | { type: 'spawned'; id: string; actorType: string; parent?: string }
  | { type: 'state'; id: string; actorType: string; state: string }
  | { type: 'down'; id: string; actorType: string; reason: string; error?: string }
  | { type: 'restart'; id: string; actorType: string; supervisor: string; restarts: number };

const subject = new Subject<ActorEvent & { shard?: number }>();
let enabled = false;

/** Diagnostics channels, as undici publishes its lifecycle (`gatehouse:actor:crash`, ...). */
export const channels = {
  crash: diagnostics.channel('gatehouse:actor:crash'),
  restart: diagnostics.channel('gatehouse:supervisor:restart'),
  intensity: diagnostics.channel('gatehouse:supervisor:intensity'),
};

/**
 * Actor events are produced only while someone listens (debug mode), so the data plane pays one
 * boolean test per lifecycle step otherwise.
 */
export function setActorEventsEnabled(on: boolean): void {
  enabled = on;
}

export function actorEventsEnabled(): boolean {
  return enabled;
}

export function emitActorEvent(e: ActorEvent & { shard?: number }): void {
  if (enabled) subject.next(e);
}

/** The stream of actor events of this thread (plus those forwarded from shards). */
export const actorEvents$ = subject.asObservable();
