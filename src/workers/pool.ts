import os from 'node:os';
import type { MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { Logger } from 'pino';
import { runShard } from './shard-runtime.ts';
import { trackResource, trackWorker, type WorkerLike } from '../runtime/resources.ts';
import type { ShardHost } from '../actors/shard.ts';
import type { ShardInit, ShardResult } from './protocol.ts';

/**
 * The young generation of a shard thread, in MB. V8 sizes it as 3 semi-spaces (two semi-spaces and
 * a new large-object space of the same size), so 12 is a 4 MiB semi-space, the same as
 * `--max-semi-space-size=4` (measured: the new space then peaks at the same size in both). Left to
 * V8 a worker gets 192 MB (64 MiB semi-spaces): while thousands of connections are set up most
 * allocations survive, V8 grows the semi-spaces to that maximum, and their pages stay resident:
 * 3-5 KiB of RSS per idle connection at 9,000 (docs/benchmarks.md). 4 MiB keeps that gain at no
 * churn or bulk cost; 1 MiB (3 MB here) costs +8 % churn CPU (more short-lived objects promoted).
 */
export const SHARD_YOUNG_GENERATION_MB = 12;

/**
 * Worker-thread shards hosted by piscina: one long-running shard task per thread, in a pool of
 * their own (a piscina worker parks its event loop between tasks, and piscina is tuned for task
 * queues: nothing else may run on these threads). piscina replaces a thread that crashed; it
 * re-runs nothing by itself, which is the ShardActor's supervisor's job.
 *
 * @example
 * const host = new PiscinaShardHost(2, log);
 * await host.run(init, port2, signal); // resolves when the shard drained, rejects if it crashed
 * await host.close();
 */
export class PiscinaShardHost implements ShardHost {
  readonly pool: Piscina;
  #closed: Promise<void> | undefined;

  constructor(threads: number, log: Logger) {
    this.pool = new Piscina({
      filename: new URL('./shard.worker.ts', import.meta.url).href,
      minThreads: threads,
      maxThreads: threads,
      concurrentTasksPerWorker: 1,
      idleTimeout: Number.POSITIVE_INFINITY,
      // The task never ends while the shard runs; between tasks keep the loop alive (no Atomics.wait).
      atomics: 'disabled',
      maxQueue: threads,
      env: process.env,
      resourceLimits: { maxYoungGenerationSizeMb: SHARD_YOUNG_GENERATION_MB },
    });
    this.pool.on('error', (err: unknown) => log.error({ err }, 'shard pool error'));
    this.pool.on('workerCreate', (w: { worker?: WorkerLike }) => {
      if (w?.worker) trackWorker(w.worker, 'shard thread');
    });
    this.#untrack = trackResource('worker pool', 'shards');
  }
  readonly #untrack: () => void;

  run(init: ShardInit, port: MessagePort, signal: AbortSignal): Promise<ShardResult> {
    return this.pool.run({ init, port }, { transferList: [port as never], signal });
  }

  /** Terminates every thread (after the shards have drained). Idempotent. */
  close(): Promise<void> {
    this.#closed ??= this.pool.destroy().finally(this.#untrack);
    return this.#closed;
  }
}

/** `workers: 0`: the data plane runs in the main thread (tests, debugging). */
export class InThreadShardHost implements ShardHost {
  readonly #log: Logger;
  constructor(log: Logger) {
    this.#log = log;
  }
  run(init: ShardInit, port: MessagePort, signal: AbortSignal): Promise<ShardResult> {
    return runShard(init, port, { log: this.#log.child({ shard: init.shard }), inThread: true, signal });
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** SO_REUSEPORT is Linux (and some BSDs) only; elsewhere the data plane runs in the main thread. */
export function reusePortSupported(): boolean {
  return os.platform() === 'linux' || os.platform() === 'freebsd';
}
