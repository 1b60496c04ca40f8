import { threadId, type MessagePort } from 'node:worker_threads';
import { createLogger } from '../log.ts';
import { runShard } from './shard-runtime.ts';
import type { ShardInit, ShardResult } from './protocol.ts';

/**
 * The piscina task of a worker-thread shard: builds the shard's subtree and runs it until it is
 * drained through `port`. One such task runs per worker thread for the thread's whole life.
 */
export default async function shardTask({ init, port, thread }: { init: ShardInit; port: MessagePort; thread?: Int32Array }): Promise<ShardResult> {
  // Tells the host which thread runs this shard: it waits for that thread's exit after an abort.
  if (thread) Atomics.store(thread, 0, threadId);
  const log = createLogger({ level: init.config.logLevel, base: { shard: init.shard } });
  return runShard(init, port, { log, inThread: false });
}
