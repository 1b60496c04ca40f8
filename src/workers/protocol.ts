import type { TreeNode, TreeOptions } from '../runtime/actor.ts';
import type { ActorEvent } from '../runtime/events.ts';
import type { StateTableBuffers } from './state-table.ts';
import type { ShardConfig } from './shard-config.ts';
import type { BreakerReport } from './balancer.ts';
import type { HubFromShard, HubToShard } from '../hub/messages.ts';
import type { RateAsk } from '../cluster/ratelimit-shard.ts';

/** What the main thread hands a shard task. */
export interface ShardInit {
  shard: number;
  config: ShardConfig;
  buffers: StateTableBuffers;
  /** Bind listeners with SO_REUSEPORT (false only when the data plane runs in the main thread). */
  reusePort: boolean;
  /** Each hub listener's ready nodes now, so that a (re)started shard's first clients find them. */
  hubNodes?: Record<string, string[]>;
}

/** Main thread to shard. Requests carry an id; the shard answers with the same id. */
export type ToShard =
  | { type: 'tree'; id: number; opts: TreeOptions }
  | { type: 'counts'; id: number }
  /** The shard's HTTP request metrics: replies with its `HttpStats.snapshot()` (`src/http/stats.ts`). */
  | { type: 'http-stats'; id: number }
  | { type: 'config'; id: number; config: ShardConfig }
  | { type: 'drain'; timeoutMs: number }
  | { type: 'events'; enabled: boolean }
  | { type: 'crash' }
  /** Debug mode: the shard thread busy-loops for good, for the main thread's watchdog to find (worker threads only). */
  | { type: 'hang' }
  /** Debug mode: crash one actor of the shard (a hub client) as if its code had thrown; replies true when found. */
  | { type: 'crash-actor'; id: number; actor: string }
  | HubToShard;

/** Shard to main thread. */
export type FromShard =
  | { type: 'ready'; listeners: { name: string; host: string; port: number }[] }
  | { type: 'reply'; id: number; value?: unknown; error?: { code?: string; message: string } }
  | { type: 'restart'; supervisor: string; child: string; restarts: number }
  | { type: 'actor-event'; event: ActorEvent }
  | { type: 'log'; level: string; msg: string }
  /** A breaker event about the backend in that state-table row (see `balancer.ts`). */
  | { type: 'backend'; slot: number; event: BreakerReport }
  /** Cluster mode: rate-limit leases running low (one message per event-loop turn; see src/cluster/ratelimit.ts). */
  | { type: 'rl-ask'; asks: RateAsk[] }
  | HubFromShard;

/** The value a shard task resolves with (a crash rejects it instead). */
export interface ShardResult {
  ok: boolean;
  code?: string;
  message?: string;
}

export type { TreeNode };
