/**
 * A registry of the resources that Node cannot name for us. Sockets, servers, timers and child
 * processes can be found through `async_hooks`, but a worker thread shows there only as a bare
 * `WORKER` handle (and not at all in `process.getActiveResourcesInfo()` on Node 24), and a
 * piscina pool not at all.
 * Code that creates one registers it here, so the test leak check (`test/setup/leaks.ts`) and
 * debugging tools can say what is still alive.
 *
 * Cost: one Map set and delete per resource. With GATEHOUSE_TRACK_ORIGIN=1 (tests) each entry
 * also keeps the stack where it was created, as actors do.
 */

/** One tracked resource: what it is (`worker`, `worker pool`), which one, and where it was made. */
export interface TrackedResource {
  /** Unique in this thread, in creation order: the leak check compares resources by it, never by count. */
  id: number;
  kind: string;
  label: string;
  /** The creation stack, when GATEHOUSE_TRACK_ORIGIN=1. */
  origin?: string;
}

/** The part of a `node:worker_threads` `Worker` that {@link trackWorker} needs. */
export interface WorkerLike {
  readonly threadId: number;
  once(event: 'exit', listener: (exitCode: number) => void): unknown;
}

const TRACK_ORIGIN = process.env.GATEHOUSE_TRACK_ORIGIN === '1';

// Keyed by a token (or the worker itself), so that tracking the same worker twice keeps one entry.
const tracked = new Map<object, TrackedResource>();
let nextId = 1;

function originHere(): string | undefined {
  // Drop "Error" and the frames inside this file: the first frame shown is the caller.
  return TRACK_ORIGIN ? new Error().stack?.split('\n').slice(3, 7).join('\n') : undefined;
}

/**
 * Registers a live resource and returns the function that unregisters it. Call the returned
 * function once the resource is fully released (after `await pool.destroy()`, not before);
 * calling it again does nothing.
 *
 * @example
 * const pool = new Piscina({ filename: shardWorkerUrl, minThreads: n, maxThreads: n });
 * const untrack = trackResource('worker pool', `shards (${n} threads)`);
 * // ... later, in close():
 * await pool.destroy();
 * untrack();
 */
export function trackResource(kind: string, label: string): () => void {
  const token = {};
  tracked.set(token, { id: nextId++, kind, label, origin: originHere() });
  return () => {
    tracked.delete(token);
  };
}

/**
 * Registers a worker thread until it emits `exit`. Returns a function that unregisters it
 * early (rarely needed). Tracking the same worker again replaces its label and keeps one entry;
 * the test set-up tracks every `new Worker` it sees, and a later call from production code
 * gives that worker a better name.
 *
 * @example
 * import { Worker } from 'node:worker_threads';
 * const w = new Worker(new URL('../workers/shard.worker.ts', import.meta.url), { workerData });
 * trackWorker(w, `shard-${i}`);
 * // ... and with piscina, for each thread it starts:
 * for (const t of pool.threads) trackWorker(t, `shard pool thread ${t.threadId}`);
 */
export function trackWorker(worker: WorkerLike, label: string): () => void {
  const existing = tracked.get(worker);
  if (existing) {
    existing.label = label;
  } else {
    tracked.set(worker, { id: nextId++, kind: 'worker thread', label, origin: originHere() });
    worker.once('exit', () => {
      tracked.delete(worker);
    });
  }
  return () => {
    tracked.delete(worker);
  };
}

/**
 * The resources registered with {@link trackResource} or {@link trackWorker} and not yet
 * released, oldest first. The leak check compares it with its baseline.
 *
 * @example
 * for (const r of liveResources()) log.info({ kind: r.kind, label: r.label }, 'resource alive');
 */
export function liveResources(): TrackedResource[] {
  return [...tracked.values()].map((r) => ({ ...r }));
}
