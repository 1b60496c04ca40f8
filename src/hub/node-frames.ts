/**
 * The frames a node sends the gateway (docs/hub-protocol.md, "Node to gateway"), parsed and
 * checked once on the main thread by the hub router.
 */

/** Node frames, as validated. */
export type NodeFrame =
  | { type: 'response'; id: string; data?: unknown; error?: unknown }
  | { type: 'push'; userId?: string; clientId?: string; data: unknown; id?: unknown }
  | { type: 'broadcast'; data: unknown; id?: unknown };

function isNonEmptyString(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0;
}

/** Parses and checks a node frame; a string says what is wrong with it. */
export function parseNodeFrame(text: string): NodeFrame | string {
  let f: unknown;
  try {
    f = JSON.parse(text);
  } catch {
    return 'malformed JSON';
  }
  if (!f || typeof f !== 'object' || Array.isArray(f)) return 'not a JSON object';
  const o = f as Record<string, unknown>;
  const hasId = o.id !== undefined;
  if (hasId && typeof o.id !== 'string' && typeof o.id !== 'number') return 'id must be a string or a number';
  switch (o.type) {
    case 'response':
      if (!isNonEmptyString(o.id)) return 'response without id';
      if (!('data' in o) && !('error' in o)) return 'response without data or error';
      return o as NodeFrame;
    case 'push': {
      const user = o.userId !== undefined;
      const client = o.clientId !== undefined;
      if (user === client) return 'push needs exactly one of userId and clientId';
      if (user && !isNonEmptyString(o.userId)) return 'push userId must be a non-empty string';
      if (client && !isNonEmptyString(o.clientId)) return 'push clientId must be a non-empty string';
      if (!('data' in o)) return 'push without data';
      return o as NodeFrame;
    }
    case 'broadcast':
      if (!('data' in o)) return 'broadcast without data';
      return o as NodeFrame;
    default:
      return typeof o.type === 'string' ? `unknown type ${JSON.stringify(o.type.slice(0, 40))}` : 'no type';
  }
}
