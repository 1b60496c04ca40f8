import type { Observable } from 'rxjs';
import type { TreeNode, TreeOptions } from '../runtime/actor.ts';
import type { ActorEvent } from '../runtime/events.ts';
import type { StateView } from './state-view.ts';
import type { HttpStatsSnapshot } from '../http/stats.ts';
import type { ClusterView } from '../cluster/cluster.ts';

/** Per shard, per listener counters summed from the shared state table. */
export interface ListenerCounters {
  listener: string;
  shard: number;
  active: number;
  /** Connections ended, by outcome (`ok`, `rate_limited`, `over_limit`, `no_backend`, `backend_error`, `timeout`). */
  outcomes: Record<string, number>;
  bytesIn: number;
  bytesOut: number;
}

export interface UpstreamsView {
  upstreams: {
    name: string;
    balance: string;
    backends: { address: string; healthy: boolean; breaker: 'closed' | 'open' | 'half_open'; activeConnections: number; weight: number; admin: 'ready' | 'drain' | 'maint' }[];
  }[];
}

/** The hub's counters and gauges (`gatehouse_hub_*`), read at scrape time. */
export interface HubStats {
  /** Registered clients per hub listener (presence, across shards). */
  clients: { listener: string; clients: number }[];
  /** Users online over every hub listener (a user drops out after its presence grace). */
  usersOnline: number;
  /** Frames by direction, summed over shards and hub listeners. */
  messages: { clientToNode: number; nodeToClient: number };
  /** Drops by reason: the shards' (state table) plus the main thread's (`bad_node_frame`, `no_client`, ...). */
  dropped: Record<string, number>;
}

/** One hub listener as the hub view and metrics show it. */
export interface HubListenerView {
  listener: string;
  nodes: { id: string; url: string; state: string; ready: boolean }[];
  clients: number;
  usersOnline: number;
  usersInGrace: number;
  pendingRequests: number;
  pendingAcks: number;
}

/** `GET /hub`: each hub listener's nodes, presence and pending tables. */
export interface HubView {
  listeners: HubListenerView[];
}

/** What the daemon tells of itself for `GET /info` (the debug UI's header and listeners panel). */
export interface DaemonInfo {
  /** The file the config was read from; absent when the daemon was given a config object. */
  configFile?: string;
  /** Data-plane shards (worker threads, or 1 in the main thread). */
  shards: number;
  /** The configured listeners; `listen` is the configured `host:port` (port 0 until bound: the tree shows the bound one). */
  listeners: { name: string; protocol: string; listen: string }[];
}

export type ReloadResult =
  | { ok: true; added: string[]; removed: string[]; changed: string[]; restartRequired?: string[] }
  | { ok: false; errors: string[] };

/**
 * What the admin server needs from the running daemon. The daemon implements it; tests use a
 * fake. Everything here is cheap or async: the admin server never blocks the control plane.
 */
export interface AdminBackend {
  /** 200 when every listener is bound on every shard and the daemon is not draining. */
  ready(): boolean;
  /** Why not ready (for the 503 body). */
  readyDetail(): Record<string, unknown>;
  /** The actor tree merged across shards (the root supervisor's node). */
  tree(opts: TreeOptions): Promise<TreeNode>;
  /** Live actors by type, across shards (for gatehouse_actors{type}). */
  actorCounts(): Promise<Record<string, number>>;
  /** Listener counters per shard. */
  listenerCounters(): ListenerCounters[];
  /** Shard liveness: index -> up. */
  shardsUp(): { shard: number; up: boolean }[];
  upstreams(): UpstreamsView;
  /**
   * The operator's state of one backend (HAProxy's runtime API): `drain` and `disable` stop new
   * traffic to it (disable also pauses its health probe), `enable` ends either; `weight` sets
   * its weight. Returns the backend's view, or undefined when no such backend is configured.
   */
  backendAdmin?(upstream: string, address: string, action: { state: 'drain' | 'disable' | 'enable' } | { weight: number }): UpstreamsView['upstreams'][number]['backends'][number] | undefined;
  /** `GET /state`: the state table's live counts; absent when the backend has no table (test fakes). */
  stateView?(): StateView;
  /** The hub's metrics; absent when the backend has no hub (test fakes). */
  hubStats?(): HubStats;
  /**
   * HTTP request metrics summed over the shards, asked of each shard at scrape time; counters
   * never go backwards (a restarted shard's counts are kept). Never rejects: a shard that does
   * not answer counts with its last snapshot. Absent in test fakes without HTTP.
   */
  httpStats?(): Promise<HttpStatsSnapshot>;
  /** Certificate reload failures and expiry per TLS listener (main thread). */
  tlsStats?(): { reloadErrors: Map<string, number>; expiry: Map<string, Map<string, number>> };
  /** The hub view; absent when the backend has no hub. */
  hubView?(): HubView;
  /** The config file, shards and listeners for `GET /info`; absent in older backends. */
  info?(): DaemonInfo;
  /** `GET /cluster`: Redis state and the live instances; undefined without cluster mode. */
  cluster?(): ClusterView | undefined;
  /** The effective config with secrets redacted. */
  config(): unknown;
  reload(): Promise<ReloadResult>;
  drain(): void;
  /**
   * Ends a `POST /drain`: listeners accept again. Resolves true once every shard accepts; false
   * when not draining or when the daemon is stopping (a SIGTERM drain cannot be taken back).
   */
  undrain?(): Promise<boolean>;
  /** Actor lifecycle events (debug mode only). */
  actorEvents$: Observable<ActorEvent & { shard?: number }>;
  debug: boolean;
  /** Debug-only fault injection: crash a shard. Returns false when no such shard. */
  crashShard(index: number): boolean;
  /**
   * Debug-only fault injection: makes a shard's thread busy-loop, for the watchdog to find.
   * `not_watched` when nothing would end the loop (`workers: 0`, `runtime.watchdog: 0`); absent in test fakes.
   */
  hangShard?(index: number): 'hung' | 'no_such_shard' | 'not_watched';
  /** Debug mode: crashes a control-plane state-machine actor (a probe, a breaker, a custom actor) by id. */
  crashActor(id: string): boolean | Promise<boolean>;
}
