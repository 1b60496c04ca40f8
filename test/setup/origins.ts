import { createHook } from 'node:async_hooks';

/**
 * Opt-in (GATEHOUSE_LEAK_ORIGINS=1): remembers where each timer, socket, server, child process
 * and port was created, so the leak report can say it. Off by default because an async hook
 * with `init` makes Node call into JS for every promise created, which slows every test.
 * Only `init` is hooked, not `destroy` (which would also track every promise until GC); dead
 * entries are pruned by looking at the resource instead.
 *
 * Some handles are created in a callback, with no test frame on the stack: `listen(0, host)`
 * creates its server handle after a lookup, an accepted socket comes from its server. For
 * those, the stack of the async work that triggered them (`triggerAsyncId`) is used.
 */

type Resource = { _destroyed?: boolean; _idleTimeout?: number; _repeat?: number | null; hasRef?: () => boolean };
interface Live {
  type: string;
  seq: number;
  ref: WeakRef<Resource>;
  asyncId: number;
}
interface Origin {
  frames: string[];
  trigger: number;
}

/** The resources the leak report describes; other async work is kept only as a trigger. */
const LIVE_TYPES = new Set([
  'Timeout', 'Immediate', 'TCPWRAP', 'TCPSERVERWRAP', 'PIPEWRAP', 'PIPESERVERWRAP', 'PROCESSWRAP',
  'UDPWRAP', 'FSEVENTWRAP', 'STATWATCHER', 'MESSAGEPORT', 'WORKER',
]);
const PRUNE_AT = 5_000;
const MAX_ORIGINS = 50_000;
const MAX_HOPS = 8;
const MAX_FRAMES = 6;

// Frames inside vitest, Node and this set-up say nothing about who created a leak.
const NOISE = /node_modules[\\/]|\(node:|^at node:|\(<anonymous>\)$|test[\\/]setup[\\/](origins|worker-tracking)\.ts/;

/** The frames of `stack` that point at project code, at most six. */
export function usefulFrames(stack: string | undefined): string[] {
  const frames = (stack ?? '').split('\n').map((l) => l.trim());
  return frames.filter((l) => l.startsWith('at ') && !NOISE.test(l)).slice(0, MAX_FRAMES);
}

const live = new Map<number, Live>();
const origins = new Map<number, Origin>();
let seq = 0;
let enabled = false;

function gone(e: Live): boolean {
  const r = e.ref.deref();
  return r === undefined || r._destroyed === true;
}

function prune(): void {
  for (const [id, e] of live) if (gone(e)) live.delete(id);
}

/** Starts recording creation stacks when GATEHOUSE_LEAK_ORIGINS=1, once per process. Returns whether it is on. */
export function installOriginTracking(): boolean {
  if (enabled || process.env.GATEHOUSE_LEAK_ORIGINS !== '1') return enabled;
  enabled = true;
  createHook({
    init(asyncId, type, trigger, resource) {
      if (type === 'PROMISE') return;
      // Node's own frames (net, timers, async_hooks) would use up the default limit of 10.
      const limit = Error.stackTraceLimit;
      Error.stackTraceLimit = 40;
      const stack = new Error().stack;
      Error.stackTraceLimit = limit;
      origins.set(asyncId, { frames: usefulFrames(stack), trigger });
      // Oldest first: a Map iterates in insertion order.
      if (origins.size > MAX_ORIGINS) origins.delete(origins.keys().next().value!);
      if (!LIVE_TYPES.has(type)) return;
      live.set(asyncId, { type, seq: ++seq, ref: new WeakRef(resource as Resource), asyncId });
      if (live.size > PRUNE_AT && live.size % PRUNE_AT === 1) prune();
    },
  }).enable();
  return true;
}

/** Whether creation stacks are being recorded. */
export function originTrackingEnabled(): boolean {
  return enabled;
}

/** A position in the recording: resources created after it are newer than a baseline. */
export function originMark(): number {
  return seq;
}

/** The project frames where `asyncId` was created, or else where the work that triggered it was. */
function framesOf(asyncId: number): { frames: string[]; indirect: boolean } {
  let id = asyncId;
  for (let hop = 0; hop < MAX_HOPS; hop++) {
    const o = origins.get(id);
    if (!o) break;
    if (o.frames.length > 0) return { frames: o.frames, indirect: hop > 0 };
    id = o.trigger;
  }
  return { frames: [], indirect: false };
}

/** `created at:` and its frames, indented by `prefix`; nothing when nothing was recorded. */
function createdAt(asyncId: number, prefix: string): string[] {
  const { frames, indirect } = framesOf(asyncId);
  if (frames.length === 0) return [];
  const title = indirect ? 'created by async work started at:' : 'created at:';
  return [`${prefix}${title}`, ...frames.map((f) => `${prefix}  ${f}`)];
}

/** Live, ref'd timers created after `mark`: how each was set, then where. */
export function timerOrigins(mark: number, prefix: string): string[] {
  const out: string[] = [];
  for (const e of live.values()) {
    if (e.seq <= mark || e.type !== 'Timeout' || gone(e)) continue;
    const t = e.ref.deref()!;
    if (t.hasRef?.() === false) continue;
    out.push(t._repeat ? `setInterval every ${t._repeat} ms` : `setTimeout of ${t._idleTimeout} ms`);
    out.push(...createdAt(e.asyncId, prefix));
  }
  return out;
}

/** Where the native handle (a socket's or server's `_handle`, a MessagePort) was created, as report lines. */
export function handleOrigin(handle: unknown, prefix: string): string[] {
  if (typeof handle !== 'object' || handle === null) return [];
  for (const e of live.values()) if (e.ref.deref() === handle) return createdAt(e.asyncId, prefix);
  return [];
}
