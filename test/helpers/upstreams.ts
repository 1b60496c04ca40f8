import { expect } from 'vitest';
import { metric, until, type Daemon, type LogLine } from './daemon.ts';

/**
 * Reading a running daemon's upstreams side through its admin API and logs: a config builder,
 * `/actors` and `/upstreams` lookups, the breaker's story in the logs, and gauges drained to zero.
 */

/** One upstream of {@link upstreamsConfig}. */
export interface UpstreamSpec {
  name: string;
  backends: string[];
  /** More YAML keys of the upstream, one per line (re-indented). */
  extra: string;
}

/**
 * A daemon config at `workers: 2` with round-robin upstreams (connectTimeout 1s, connectRetries 2)
 * and TCP listeners on port 0, each `[name, upstream]`.
 *
 * @example
 * const yaml = upstreamsConfig([{ name: 'app', backends: ['127.0.0.1:9001'], extra: 'healthCheck: { enabled: false }' }], [['tcp-in', 'app']]);
 */
export function upstreamsConfig(ups: UpstreamSpec[], listeners: [string, string][], log = 'info'): string {
  const upstream = (u: UpstreamSpec): string => `  - name: ${u.name}
    balance: round_robin
    connectTimeout: 1s
    connectRetries: 2
${u.extra
  .trim()
  .split('\n')
  .map((l) => `    ${l.trim()}`)
  .join('\n')}
    backends: [ ${u.backends.map((a) => `"${a}"`).join(', ')} ]`;
  return `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 2, shutdownTimeout: 5s }
log: { level: ${log} }
upstreams:
${ups.map(upstream).join('\n')}
listeners:
${listeners.map(([name, up]) => `  - { name: ${name}, protocol: tcp, listen: "127.0.0.1:0", upstream: ${up} }`).join('\n')}
`;
}

/** A node of `GET /actors`. */
export interface ActorNode {
  id: string;
  type: string;
  state: string;
  status: string;
  children: ActorNode[];
  [k: string]: unknown;
}

/**
 * Visits every node of an `/actors` tree, depth first, with its parent.
 *
 * @example
 * walkTree(await gh.json<ActorNode>('/actors'), (n) => console.log(n.id));
 */
export function walkTree(n: ActorNode, visit: (n: ActorNode, parent: ActorNode | undefined) => void, parent?: ActorNode): void {
  visit(n, parent);
  for (const c of n.children ?? []) walkTree(c, visit, n);
}

/**
 * Every node of the tree that `pred` accepts (shard subtrees repeat listener ids), with its parent.
 *
 * @example
 * expect(findNodes(tree, (n) => n.type === 'connection')).toEqual([]);
 */
export function findNodes(tree: ActorNode, pred: (n: ActorNode) => boolean): { node: ActorNode; parent: ActorNode | undefined }[] {
  const out: { node: ActorNode; parent: ActorNode | undefined }[] = [];
  walkTree(tree, (node, parent) => {
    if (pred(node)) out.push({ node, parent });
  });
  return out;
}

/** The body of `GET /upstreams` (docs/admin-api.md). */
export interface UpstreamsBody {
  upstreams: { name: string; balance: string; backends: { address: string; healthy: boolean; breaker: 'closed' | 'open' | 'half_open'; activeConnections: number; weight: number; admin: 'ready' | 'drain' | 'maint' }[] }[];
}

/**
 * One backend of `GET /upstreams`, or undefined when it is not listed.
 *
 * @example
 * expect((await backendView(gh, 'app', '127.0.0.1:9001'))?.breaker).toBe('open');
 */
export async function backendView(gh: Daemon, upstream: string, address: string): Promise<UpstreamsBody['upstreams'][number]['backends'][number] | undefined> {
  const body = await gh.json<UpstreamsBody>('/upstreams');
  return body.upstreams.find((u) => u.name === upstream)?.backends.find((b) => b.address === address);
}

/**
 * `time` of a log line in epoch ms (the daemon logs ISO times).
 *
 * @example
 * const late = gh.logs.filter((l) => logTime(l) > since);
 */
export function logTime(l: LogLine): number {
  return typeof l.time === 'number' ? l.time : Date.parse(String(l.time));
}

/**
 * The Prometheus text of `/metrics`.
 *
 * @example
 * expect(metric(await metricsText(gh), 'gatehouse_breaker_state', { upstream: 'app', backend })).toBe(1);
 */
export async function metricsText(gh: Daemon): Promise<string> {
  return (await gh.admin('/metrics')).text();
}

const OUTCOMES = ['ok', 'rate_limited', 'over_limit', 'no_backend', 'backend_error', 'timeout', 'error'];

/**
 * Waits until `connections` connections of listener `tcp-in` have ended (any outcome) and none is
 * active; resolves with that scrape.
 *
 * @example
 * const text = await drained(gh, load.started);
 */
export async function drained(gh: Daemon, connections: number, listener = 'tcp-in', timeoutMs = 15_000): Promise<string> {
  const text = await until(
    async () => {
      const m = await metricsText(gh);
      const ended = OUTCOMES.reduce((n, outcome) => n + (metric(m, 'gatehouse_connections_total', { listener, outcome }) ?? 0), 0);
      return ended >= connections && metric(m, 'gatehouse_connections_active', { listener }) === 0 ? m : undefined;
    },
    timeoutMs,
    `all ${connections} connections of ${listener} ended`,
  );
  return text!;
}

/**
 * Stops the daemon (exit 0) and waits for its last log line: the shards stop before it, so every
 * line they wrote has been read by then.
 *
 * @example
 * const logs = await stopAndReadLogs(gh);
 */
export async function stopAndReadLogs(gh: Daemon): Promise<LogLine[]> {
  expect(await gh.stop()).toBe(0);
  await gh.waitForLog((l) => l.msg === 'gatehouse stopped');
  return gh.logs;
}

const STORY: Record<string, string> = {
  'circuit breaker opened': 'O',
  'circuit breaker half-open: one trial connection allowed': 'H',
  'circuit breaker trial failed: open again': 'F',
  'circuit breaker closed': 'C',
};

/**
 * A backend's breaker log lines as letters: O opened, H half-open, F trial failed (open again),
 * C closed.
 *
 * @example
 * expect(breakerStory(gh.logs, backend)).toBe('OHC');
 */
export function breakerStory(logs: LogLine[], backend: string): string {
  return logs
    .filter((l) => l.backend === backend && STORY[l.msg])
    .map((l) => STORY[l.msg] ?? '?')
    .join('');
}
