import { createRequire, syncBuiltinESMExports } from 'node:module';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WorkerOptions } from 'node:worker_threads';
import { trackWorker } from '../../src/runtime/resources.ts';
import { handleMark, handOver } from './handles.ts';

const INSTALLED = Symbol.for('gatehouse.test.workerTracking');

function labelOf(filename: unknown, options: WorkerOptions | undefined): string {
  if (options?.eval) return `eval: ${String(filename).replace(/\s+/g, ' ').slice(0, 60)}`;
  const path = filename instanceof URL ? (filename.protocol === 'file:' ? fileURLToPath(filename) : filename.href) : String(filename);
  return options?.name ? `${options.name} (${relative(process.cwd(), path)})` : relative(process.cwd(), path);
}

/**
 * Node 24 shows a worker thread only as a bare `WORKER` handle, so in tests every
 * `new Worker(...)` is tracked (src/runtime/resources.ts) until it exits, also those piscina
 * starts and those production code forgot to track. This swaps `worker_threads.Worker` for a
 * subclass and syncs the ESM bindings, so it must run before the test file imports anything
 * that creates workers: it is called at the top of the set-up file. Idempotent.
 *
 * @example
 * installWorkerTracking();
 * const w = new Worker('setInterval(() => {}, 1000)', { eval: true }); // now in liveResources()
 */
export function installWorkerTracking(): void {
  const g = globalThis as Record<symbol, unknown>;
  if (g[INSTALLED]) return;
  g[INSTALLED] = true;
  const wt = createRequire(import.meta.url)('node:worker_threads') as typeof import('node:worker_threads');
  const Original = wt.Worker;
  class TrackedWorker extends Original {
    constructor(filename: string | URL, options?: WorkerOptions) {
      const mark = handleMark();
      super(filename, options);
      // Its internal ports close when it exits: the worker is reported, not them.
      handOver(mark, 'MESSAGEPORT');
      trackWorker(this, labelOf(filename, options));
    }
  }
  // Keep the class's name so that stack traces and inspection read as before.
  Object.defineProperty(TrackedWorker, 'name', { value: 'Worker' });
  wt.Worker = TrackedWorker;
  syncBuiltinESMExports();
}
