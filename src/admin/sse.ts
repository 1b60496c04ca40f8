import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Observable, Subscription } from 'rxjs';
import type { ActorEvent } from '../runtime/events.ts';
import { AdminHttpError } from './http.ts';

/**
 * One Server-Sent Event, written as `event: <event>\ndata: <json>\n\n`.
 *
 * @example
 * const msg: SseMessage = { event: 'spawned', data: { id: 'conn:1:1' } };
 */
export interface SseMessage {
  event: string;
  data: unknown;
}

/** Options of {@link SseHub}. */
export interface SseHubOptions {
  log: Logger;
  /** A comment line is sent this often so proxies and clients see the stream alive. */
  heartbeatMs: number;
  /** A client that falls this many bytes behind is disconnected instead of buffered without bound. */
  maxBufferedBytes?: number;
}

const DEFAULT_MAX_BUFFERED = 1 << 20;

/** Strips what would end an SSE field early. */
const field = (s: string): string => s.replace(/[\r\n]/g, ' ');

/**
 * Serves Observables as Server-Sent Events and owns every open stream: each has one subscription
 * and one heartbeat timer, both released when the client goes away, the source completes, or the
 * hub is closed.
 *
 * @example
 * const hub = new SseHub({ log, heartbeatMs: 15_000 });
 * hub.open(res, events$.pipe(map((e) => ({ event: e.type, data: e }))));
 * hub.closeAll(); // on server close
 */
export class SseHub {
  readonly #opts: SseHubOptions;
  readonly #streams = new Set<() => void>();

  constructor(opts: SseHubOptions) {
    this.#opts = opts;
  }

  /** Open streams (for tests and diagnostics). */
  get size(): number {
    return this.#streams.size;
  }

  open(res: ServerResponse, source$: Observable<SseMessage>): void {
    const { log, heartbeatMs } = this.#opts;
    const maxBuffered = this.#opts.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    if (res.req.method === 'HEAD') {
      res.end();
      return;
    }
    // The first bytes tell the client the stream is live before any event happens.
    res.write(': connected\n\n');

    let subscription: Subscription | undefined;
    let heartbeat: NodeJS.Timeout | undefined;
    let done = false;
    const cleanup = (): void => {
      if (done) return;
      done = true;
      clearInterval(heartbeat);
      subscription?.unsubscribe();
      this.#streams.delete(end);
    };
    const end = (): void => {
      const wasOpen = !done;
      cleanup();
      if (wasOpen && !res.writableEnded) res.end();
    };
    const write = (chunk: string): void => {
      if (done || res.writableEnded) return;
      if (res.writableLength > maxBuffered) {
        log.warn({ bufferedBytes: res.writableLength }, 'sse client too slow; disconnected');
        cleanup();
        res.destroy();
        return;
      }
      res.write(chunk);
    };

    this.#streams.add(end);
    // `res` closes when the client goes away (the request's own 'close' fires once its body is read).
    res.once('close', cleanup);
    heartbeat = setInterval(() => write(': heartbeat\n\n'), heartbeatMs);
    subscription = source$.subscribe({
      next: (m) => {
        let data: string;
        try {
          data = JSON.stringify(m.data) ?? 'null';
        } catch (err) {
          log.warn({ err }, 'sse event not serialisable; skipped');
          return;
        }
        write(`event: ${field(m.event)}\ndata: ${data}\n\n`);
      },
      error: (err: unknown) => {
        log.warn({ err }, 'sse source failed');
        end();
      },
      complete: end,
    });
    // A source that completed synchronously already ran `end` before `subscription` was set.
    if (done) subscription.unsubscribe();
  }

  /** Ends every open stream (the server is closing). */
  closeAll(): void {
    for (const end of [...this.#streams]) end();
  }
}

/** The kinds of actor event `/actors/events` streams (`event:` of each message). */
export const ACTOR_EVENT_KINDS = ['spawned', 'state', 'down', 'restart'] as const;

const LIST_MAX = 64;
const NAME_MAX = 200;

/** A comma-separated query list (repeats add up); a 400 `bad_query` naming `name` when an item is empty or too long. */
function listParam(query: URLSearchParams, name: string): Set<string> | undefined {
  const all = query.getAll(name);
  if (all.length === 0) return undefined;
  const items = all.flatMap((v) => v.split(','));
  if (items.length > LIST_MAX || items.some((i) => i === '' || i.length > NAME_MAX)) {
    throw new AdminHttpError(400, 'bad_query', `${name} must be a comma-separated list of at most ${LIST_MAX} non-empty names of at most ${NAME_MAX} characters`, { extra: { param: name } });
  }
  return new Set(items);
}

/**
 * The filter of `GET /actors/events?type=&exclude=&event=`: `type` keeps only these actor types,
 * `exclude` drops these (applied after `type`), `event` keeps only these kinds. Each is a
 * comma-separated list; an absent one filters nothing. Throws a 400 `bad_query` for a bad list or
 * an unknown kind.
 *
 * @example
 * const keep = actorEventFilter(new URLSearchParams('exclude=healthProbe&event=down,restart'));
 * keep({ type: 'down', id: 'shard-1', actorType: 'shard', reason: 'error' }); // true
 */
export function actorEventFilter(query: URLSearchParams): (e: ActorEvent) => boolean {
  const types = listParam(query, 'type');
  const exclude = listParam(query, 'exclude');
  const kinds = listParam(query, 'event');
  const unknown = kinds && [...kinds].filter((k) => !(ACTOR_EVENT_KINDS as readonly string[]).includes(k));
  if (unknown?.length) {
    throw new AdminHttpError(400, 'bad_query', `event must list kinds among ${ACTOR_EVENT_KINDS.join(', ')}`, { extra: { param: 'event', unknown } });
  }
  return (e) => (!types || types.has(e.actorType)) && !exclude?.has(e.actorType) && (!kinds || kinds.has(e.type));
}
