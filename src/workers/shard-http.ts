/**
 * What a shard keeps for its http listeners: the upstream pools and balancers they share, the
 * shard's HTTP counters (read by the main thread at scrape time, nothing per request crosses
 * threads) and the request id generator. Kept apart from shard-runtime.ts as shard-hub.ts is.
 */
import type { Logger } from 'pino';
import type { Actor } from '../runtime/actor.ts';
import { HttpListenerActor } from '../actors/http-listener.ts';
import type { HttpConnectionActor } from '../actors/http-connection.ts';
import { AccessLog } from '../http/access-log.ts';
import { httpPoolHandlers } from '../http/dispatch.ts';
import { RequestIdGenerator } from '../http/middleware/request-id.ts';
import { HttpStats } from '../http/stats.ts';
import { HttpUpstreams } from '../http/upstreams.ts';
import type { Balancer } from './balancer.ts';
import type { ShardConfig, ShardListener, ShardUpstream } from './shard-config.ts';
import type { StateTable } from './state-table.ts';

/** The fields every listener of a shard is made with. */
export interface ListenerCommon {
  shard: number;
  listener: ShardListener;
  table: StateTable;
  log: Logger;
  reusePort: boolean;
}

/**
 * The HTTP part of one shard.
 *
 * @example
 * const http = new ShardHttp(config, (u) => new Balancer(u, table));
 * await http.listener(common).start();
 */
export class ShardHttp {
  readonly stats = new HttpStats();
  readonly ids = new RequestIdGenerator();
  readonly upstreams: HttpUpstreams<HttpConnectionActor>;

  constructor(config: ShardConfig, makeBalancer: (u: ShardUpstream) => Balancer) {
    this.upstreams = new HttpUpstreams(httpPoolHandlers, makeBalancer);
    this.upstreams.configure(config.upstreams);
  }

  /** A new http listener actor for `common.listener` (not started). */
  listener(common: ListenerCommon): HttpListenerActor {
    const sample = common.listener.http!.accessLogSample;
    const accessLog = sample > 0 ? new AccessLog(common.log.child({ listener: common.listener.name, actorType: 'access-log' }), sample) : undefined;
    return new HttpListenerActor({ ...common, upstreams: this.upstreams, stats: this.stats, accessLog, ids: this.ids });
  }

  /** A reload: new balancers; pools of backends that left close once their requests end. */
  configure(config: ShardConfig): void {
    this.upstreams.configure(config.upstreams);
  }

  /** The shard ends: every pooled socket is closed now. */
  close(): Promise<void> {
    return this.upstreams.close(true);
  }
}

/** True for an http listener actor. */
export function isHttp(a: Actor | undefined): a is HttpListenerActor {
  return a instanceof HttpListenerActor;
}
