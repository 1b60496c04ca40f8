import { createHook } from 'node:async_hooks';

/**
 * Tracks every handle, timer and I/O request of this thread by identity, from its creation to
 * its `destroy`, with `async_hooks`: unref'd ones included, which `process.getActiveResourcesInfo()`
 * leaves out (an unref'd interval or listening server would pass a check built on it). A leak
 * is then a resource created after a baseline and not destroyed since, never a count
 * difference, so a socket closed and another leaked do not cancel out.
 *
 * Checked on Node 24: every type below fires `destroy` once it is closed (handles: after their
 * close callback, so a handle that is closing is still here for a turn or two; timers: when
 * cleared or after a one-shot fired; requests: when they complete), except a FileHandle, whose
 * `destroy` comes with garbage collection: a closed one is recognised by its descriptor. Promises are skipped at the
 * top of `init`, but a `destroy` hook still makes Node track each promise until it is collected
 * (about 0.5 us per promise, measured), a price tests pay for a check that cannot be fooled.
 */

/** What a tracked resource is: its `async_hooks` type, when it was created, and the object. */
export interface TrackedHandle {
  asyncId: number;
  /** The `async_hooks` type: `TCPWRAP`, `Timeout`, `PROCESSWRAP`, ... */
  type: string;
  /** Creation order: resources with a `seq` above a {@link handleMark} are newer than it. */
  seq: number;
  /** The resource object (a native handle, a `Timeout`); `undefined` once collected. */
  resource: HandleResource | undefined;
}

/** The parts of a native handle or timer object the leak check reads. */
export type HandleResource = {
  hasRef?: () => boolean;
  _destroyed?: boolean;
  _idleTimeout?: number;
  _repeat?: number | null;
  /** A native FileHandle's descriptor: negative once closed. */
  fd?: number;
  constructor?: { name?: string };
} & object;

/**
 * The types that keep a process alive or are I/O in flight. Left out on purpose: `PROMISE`,
 * `TickObject` and `Microtask` (scheduled work, gone within a turn), `DNSCHANNEL` (one per
 * process, lives for ever), `WORKER` (workers are tracked with labels in src/runtime/resources.ts),
 * and the http/zlib `AsyncResource`s whose `destroy` depends on the stream being consumed.
 */
export const TRACKED_TYPES: ReadonlySet<string> = new Set([
  'Timeout', 'Immediate',
  'TCPWRAP', 'TCPSERVERWRAP', 'PIPEWRAP', 'PIPESERVERWRAP', 'TTYWRAP', 'UDPWRAP', 'PROCESSWRAP',
  'SIGNALWRAP', 'FSEVENTWRAP', 'STATWATCHER', 'MESSAGEPORT', 'JSUDPWRAP',
  'TCPCONNECTWRAP', 'PIPECONNECTWRAP', 'SHUTDOWNWRAP', 'WRITEWRAP', 'UDPSENDWRAP',
  'GETADDRINFOREQWRAP', 'GETNAMEINFOREQWRAP', 'QUERYWRAP', 'FSREQCALLBACK', 'FSREQPROMISE', 'FILEHANDLE',
]);

interface Entry {
  type: string;
  seq: number;
  ref: WeakRef<HandleResource>;
}

const INSTALLED = Symbol.for('gatehouse.test.handleTracking');
const VITEST_FRAME = /node_modules[\\/](vitest|@vitest)[\\/]/;
const NOT_PROJECT = /node_modules[\\/]|\(node:|^at node:|<anonymous>|test[\\/]setup[\\/]handles\.ts/;
const entries = new Map<number, Entry>();
let seq = 0;

/**
 * Whether a timer being created now is not the test's to clean up: vitest's own deadline, armed
 * (unref'd) around each test and hook and so alive while the check runs in one (a vitest frame
 * and no project frame on the stack), or the timer of an `AbortSignal.timeout()`, which Node
 * unrefs and clears once the signal is collected. Costs a short stack per timer, about 2 us.
 */
function notTheTests(): boolean {
  const limit = Error.stackTraceLimit;
  // Node's own frames (async_hooks, timers) take the first five or six.
  Error.stackTraceLimit = 12;
  const frames = (new Error().stack ?? '').split('\n').map((l) => l.trim()).filter((l) => l.startsWith('at '));
  Error.stackTraceLimit = limit;
  if (frames.some((f) => f.startsWith('at AbortSignal.timeout (node:'))) return true;
  return frames.some((f) => VITEST_FRAME.test(f)) && frames.every((f) => NOT_PROJECT.test(f));
}

/**
 * Starts tracking, once per thread (the set-up file calls it before anything else). Idempotent.
 *
 * @example
 * installHandleTracking();
 * const mark = handleMark();
 * const t = setInterval(() => {}, 1_000).unref();
 * liveHandles(mark); // [{ type: 'Timeout', ... }]
 */
export function installHandleTracking(): void {
  const g = globalThis as Record<symbol, unknown>;
  if (g[INSTALLED]) return;
  g[INSTALLED] = true;
  createHook({
    init(asyncId, type, _trigger, resource) {
      if (!TRACKED_TYPES.has(type)) return;
      if (type === 'Timeout' && notTheTests()) return;
      entries.set(asyncId, { type, seq: ++seq, ref: new WeakRef(resource as HandleResource) });
    },
    destroy(asyncId) {
      entries.delete(asyncId);
    },
  }).enable();
}

/** A position in creation order: what is created after it has a higher `seq`. */
export function handleMark(): number {
  return seq;
}

/**
 * Stops tracking the `type` resources created after `mark`: they belong to something tracked
 * another way. A `Worker` opens three internal MessagePorts in its constructor, which close when
 * it exits, and the worker itself is tracked with a label (worker-tracking.ts).
 *
 * @example
 * const mark = handleMark();
 * const w = new Worker(file);
 * handOver(mark, 'MESSAGEPORT');
 */
export function handOver(mark: number, type: string): void {
  for (const [asyncId, e] of entries) if (e.seq > mark && e.type === type) entries.delete(asyncId);
}

/**
 * Whether a resource says it is done although its `destroy` has not been emitted yet: a timer
 * that fired or was cleared (destroy follows within the turn), or a FileHandle that was closed
 * (its destroy waits for garbage collection: `readFile` leaves one behind each time).
 */
function finished(r: HandleResource | undefined, type: string): boolean {
  if (r === undefined) return true;
  if (type === 'FILEHANDLE') return typeof r.fd === 'number' && r.fd < 0;
  return (type === 'Timeout' || type === 'Immediate') && r._destroyed === true;
}

/**
 * The tracked resources created after `mark` and not destroyed, oldest first.
 *
 * @example
 * const leaked = liveHandles(baseline.handleMark).filter((h) => h.type === 'TCPSERVERWRAP');
 */
export function liveHandles(mark = 0): TrackedHandle[] {
  const out: TrackedHandle[] = [];
  for (const [asyncId, e] of entries) {
    if (e.seq <= mark) continue;
    const resource = e.ref.deref();
    if (finished(resource, e.type)) continue;
    out.push({ asyncId, type: e.type, seq: e.seq, resource });
  }
  return out;
}
