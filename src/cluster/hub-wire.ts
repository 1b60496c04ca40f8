/**
 * What hub listeners of different instances say to each other through Redis, and the names of
 * their keys. One channel per hub listener carries both kinds of message as text, with the frame
 * last and raw (a client frame is never escaped into a second JSON string):
 *
 * - `d\nINSTANCE\nTARGET\nFRAME`: a node's push or broadcast, to the clients of every other
 *   instance (TARGET is the {@link HubTarget} as JSON, FRAME the ready client frame);
 * - `p\nINSTANCE\nSEQ\nOP\nUSER`: a change of INSTANCE's presence set (OP `on` / `off`), or
 *   `reset` / `gone` (USER empty): read its whole set again, or forget it. Written by the Lua scripts
 *   of hub-scripts.ts in the same step as the set, so SEQ orders them exactly.
 *
 * Every key and the channel of a listener carry the hash tag `{hub:LISTENER}`: on a Redis Cluster
 * they share one slot, as the scripts need.
 */
import type { HubTarget } from '../hub/messages.ts';

/** Keys and the channel of one hub listener, under the cluster's `keyPrefix`. */
export interface HubKeys {
  channel: string;
  /** The users online on `instance` (a set, TTL `deadAfter`). */
  presence(instance: string): string;
  /** The sequence number of `instance`'s presence changes. */
  seq(instance: string): string;
  /** `instance`'s clients per user, for `maxClientsPerUser` (a hash, TTL `deadAfter`). */
  caps(instance: string): string;
  /** The pushes to `userId` (a stream, entry ids `0-OFFSET`), for `resume`. */
  history(userId: string): string;
  /** Its epoch and last offset (a hash). */
  historyMeta(userId: string): string;
}

export function hubKeys(keyPrefix: string, listener: string): HubKeys {
  const base = `${keyPrefix}{hub:${listener}}`;
  return {
    channel: base,
    presence: (i) => `${base}:p:${i}`,
    seq: (i) => `${base}:s:${i}`,
    caps: (i) => `${base}:c:${i}`,
    history: (u) => `${base}:h:${u}`,
    historyMeta: (u) => `${base}:hm:${u}`,
  };
}

/** A presence message's operation. */
export type PresenceOp = 'on' | 'off' | 'reset' | 'gone';

/** A message of the channel, decoded. */
export type HubWireMessage =
  | { kind: 'deliver'; instance: string; to: HubTarget; frame: string }
  | { kind: 'presence'; instance: string; seq: number; op: PresenceOp; userId: string };

/** Encodes a delivery (one publish per node frame, whatever the number of clients). */
export function encodeDeliver(instance: string, to: HubTarget, frame: string): string {
  return `d\n${instance}\n${JSON.stringify(to)}\n${frame}`;
}

/** Decodes a channel message; undefined for anything malformed (never throws). */
export function decodeHubWire(text: string): HubWireMessage | undefined {
  const parts = splitN(text, text.startsWith('d\n') ? 4 : 5);
  if (!parts) return undefined;
  if (parts[0] === 'd') {
    let to: HubTarget;
    try {
      to = JSON.parse(parts[2]!) as HubTarget;
    } catch {
      return undefined;
    }
    if (!to || typeof to !== 'object' || !['user', 'client', 'all'].includes(to.kind)) return undefined;
    return { kind: 'deliver', instance: parts[1]!, to, frame: parts[3]! };
  }
  if (parts[0] !== 'p') return undefined;
  const seq = Number(parts[2]);
  const op = parts[3] as PresenceOp;
  if (!Number.isInteger(seq) || !['on', 'off', 'reset', 'gone'].includes(op)) return undefined;
  return { kind: 'presence', instance: parts[1]!, seq, op, userId: parts[4]! };
}

/** Splits at the first n-1 newlines (the last part keeps its own); undefined when there are fewer than n-1. */
function splitN(text: string, n: number): string[] | undefined {
  const out: string[] = [];
  let at = 0;
  for (let i = 0; i < n - 1; i++) {
    const nl = text.indexOf('\n', at);
    if (nl < 0) return undefined;
    out.push(text.slice(at, nl));
    at = nl + 1;
  }
  out.push(text.slice(at));
  return out;
}
