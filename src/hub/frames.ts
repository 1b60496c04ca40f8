/**
 * The hub's client-side wire frames (docs/hub-protocol.md): parsing what a client sends,
 * and building what the shard itself sends a client or a node. Frames the main thread builds
 * (`message`, `response`, `error` for requests, `node-down`) arrive as ready-made strings.
 *
 * A client frame is parsed once here; the node frame is stringified once from it.
 */

/** A client frame that passed validation. */
export type ClientFrame =
  | { type: 'send'; node: string | undefined; data: unknown; id: string | number | undefined }
  | { type: 'request'; id: string; node: string | undefined; data: unknown }
  /** Message recovery: what was pushed to the user after `offset` of `epoch` (cluster mode with `history`). */
  | { type: 'resume'; epoch: string; offset: number; node?: undefined; id?: undefined };

/** Error codes the gateway sends clients (`{"type":"error","code":…}`). */
export type ClientErrorCode = 'bad_request' | 'node_unavailable' | 'rate_limited' | 'timeout';

/** What {@link parseClientFrame} answers: the frame, or why it is refused (with the frame's `id` when it had one). */
export type ParseResult = { ok: true; frame: ClientFrame } | { ok: false; why: string; id?: string | number };

/** A client `request` id longer than this is refused (`bad_request`): it is echoed back and kept in the pending table. */
export const MAX_REQUEST_ID_LENGTH = 256;
/** A node id longer than this cannot be a configured node. */
const MAX_NODE_LENGTH = 256;

function idOf(o: Record<string, unknown>): string | number | undefined {
  const id = o.id;
  return typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id)) ? id : undefined;
}

/**
 * Validates one text frame from a client.
 *
 * @example
 * parseClientFrame('{"type":"send","data":1}');   // { ok: true, frame: { type: 'send', node: undefined, data: 1, id: undefined } }
 * parseClientFrame('{"type":"nope","id":"r1"}');  // { ok: false, why: 'unknown type', id: 'r1' }
 */
export function parseClientFrame(text: string): ParseResult {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { ok: false, why: 'malformed JSON' };
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return { ok: false, why: 'not a JSON object' };
  const o = v as Record<string, unknown>;
  const id = idOf(o);
  const fail = (why: string): ParseResult => (id === undefined ? { ok: false, why } : { ok: false, why, id });
  if (typeof o.type !== 'string') return fail('missing type');
  const node = o.node;
  if (node !== undefined && (typeof node !== 'string' || node.length === 0 || node.length > MAX_NODE_LENGTH)) return fail('node must be a non-empty string');
  if (!('data' in o) || o.data === undefined) {
    if (o.type === 'send' || o.type === 'request') return fail('missing data');
  }
  switch (o.type) {
    case 'send':
      return { ok: true, frame: { type: 'send', node: node as string | undefined, data: o.data, id } };
    case 'request': {
      if (typeof o.id !== 'string' || o.id.length === 0 || o.id.length > MAX_REQUEST_ID_LENGTH) return fail(`id must be a string of 1 to ${MAX_REQUEST_ID_LENGTH} characters`);
      return { ok: true, frame: { type: 'request', id: o.id, node: node as string | undefined, data: o.data } };
    }
    case 'resume':
      if (typeof o.epoch !== 'string' || o.epoch.length === 0 || o.epoch.length > 64) return fail('epoch must be a non-empty string');
      if (typeof o.offset !== 'number' || !Number.isSafeInteger(o.offset) || o.offset < 0) return fail('offset must be an integer >= 0');
      return { ok: true, frame: { type: 'resume', epoch: o.epoch, offset: o.offset } };
    default:
      return fail('unknown type');
  }
}

/** The id a refused frame carried, looked up cheaply (a flood's frames are not otherwise parsed twice). */
export function frameId(text: string): string | number | undefined {
  if (!text.includes('"id"')) return undefined;
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? idOf(v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** `{"type":"welcome","clientId","userId"}`: the first frame a client gets. */
export function welcomeFrame(clientId: string, userId: string, history?: HistoryPosition): string {
  return JSON.stringify(history ? { type: 'welcome', clientId, userId, epoch: history.epoch, offset: history.offset } : { type: 'welcome', clientId, userId });
}

/** Message recovery: where a user's history stands (a client resumes from there). */
export interface HistoryPosition {
  epoch: string;
  offset: number;
}

/** `{"type":"error","code"}`, with the `id` of the frame it answers when it had one. */
export function errorFrame(code: ClientErrorCode, id?: string | number): string {
  return JSON.stringify(id === undefined ? { type: 'error', code } : { type: 'error', id, code });
}

/** `{"type":"node-down","node"}`. */
export function nodeDownFrame(node: string): string {
  return JSON.stringify({ type: 'node-down', node });
}

/** The node frame of a client `send`: `{"type":"client-message",clientId,userId,data}`. */
export function clientMessageFrame(clientId: string, userId: string, data: unknown): string {
  return JSON.stringify({ type: 'client-message', clientId, userId, data });
}

/** The node frame of a client `request`: `{"type":"request","id":GID,clientId,userId,data}`. */
export function requestFrame(gid: string, clientId: string, userId: string, data: unknown): string {
  return JSON.stringify({ type: 'request', id: gid, clientId, userId, data });
}
