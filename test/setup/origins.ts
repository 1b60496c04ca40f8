import { createHook } from 'node:async_hooks';

/**
 * Opt-in (GATEHOUSE_LEAK_ORIGINS=1): remembers where each timer, socket, server, child process
 * and port was created, so the leak report can say it. Off by default because capturing a stack
 * for every async resource (a few microseconds each) slows every test. Which resources are
 * alive is tracked by handles.ts; this only keeps stacks, by async id, the oldest dropped first.
 *
 * Some handles are created in a callback, with no test frame on the stack: `listen(0, host)`
 * creates its server handle after a lookup, an accepted socket comes from its server. For
 * those, the stack of the async work that triggered them (`triggerAsyncId`) is used.
 */

interface Origin {
  frames: string[];
  trigger: number;
}

const MAX_ORIGINS = 50_000;
const MAX_HOPS = 8;
const MAX_FRAMES = 6;

// Frames inside vitest, Node and this set-up say nothing about who created a leak.
const NOISE = /node_modules[\\/]|\(node:|^at node:|\(<anonymous>\)$|test[\\/]setup[\\/](origins|worker-tracking|handles)\.ts/;

/** The frames of `stack` that point at project code, at most six. */
export function usefulFrames(stack: string | undefined): string[] {
  const frames = (stack ?? '').split('\n').map((l) => l.trim());
  return frames.filter((l) => l.startsWith('at ') && !NOISE.test(l)).slice(0, MAX_FRAMES);
}

const origins = new Map<number, Origin>();
let enabled = false;

/** Starts recording creation stacks when GATEHOUSE_LEAK_ORIGINS=1, once per process. Returns whether it is on. */
export function installOriginTracking(): boolean {
  if (enabled || process.env.GATEHOUSE_LEAK_ORIGINS !== '1') return enabled;
  enabled = true;
  createHook({
    init(asyncId, type, trigger) {
      if (type === 'PROMISE') return;
      // Node's own frames (net, timers, async_hooks) would use up the default limit of 10.
      const limit = Error.stackTraceLimit;
      Error.stackTraceLimit = 40;
      const stack = new Error().stack;
      Error.stackTraceLimit = limit;
      origins.set(asyncId, { frames: usefulFrames(stack), trigger });
      // Oldest first: a Map iterates in insertion order.
      if (origins.size > MAX_ORIGINS) origins.delete(origins.keys().next().value!);
    },
  }).enable();
  return true;
}

/** Whether creation stacks are being recorded. */
export function originTrackingEnabled(): boolean {
  return enabled;
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

/**
 * `created at:` and the project frames where the resource `asyncId` was created (or `created by
 * async work started at:` and the frames of what triggered it), indented by `prefix`; nothing
 * when nothing was recorded (origin tracking off, or an unknown id).
 *
 * @example
 * originOf(h.asyncId, '  '); // ['  created at:', '    at .../test/foo.test.ts:12:5']
 */
export function originOf(asyncId: number, prefix: string): string[] {
  const { frames, indirect } = framesOf(asyncId);
  if (frames.length === 0) return [];
  const title = indirect ? 'created by async work started at:' : 'created at:';
  return [`${prefix}${title}`, ...frames.map((f) => `${prefix}  ${f}`)];
}
