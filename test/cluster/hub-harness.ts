/**
 * What the hub's cluster tests share: instances of the daemon (child processes, `workers: 1`)
 * with a hub listener against one private Redis, and WebSocket clients that record their frames.
 */
import { once } from 'node:events';
import { onTestFinished } from 'vitest';
import { WebSocket } from 'ws';
import { Daemon, until, type tempDir } from '../helpers/daemon.ts';
import { SECRET, tokenFor } from '../hub/harness.ts';

export interface Frame {
  type: string;
  clientId?: string;
  data?: unknown;
  [k: string]: unknown;
}

/** A hub client: its frames in order, its close code. */
export class Client {
  readonly ws: WebSocket;
  readonly frames: Frame[] = [];
  readonly closed: Promise<number>;
  clientId = '';

  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (d: Buffer) => this.frames.push(JSON.parse(d.toString()) as Frame));
    ws.on('error', () => {});
    this.closed = new Promise((r) => ws.once('close', (code: number) => r(code)));
  }

  /** Connects and waits for the welcome. */
  static async connect(port: number, user: string): Promise<Client> {
    const c = new Client(new WebSocket(`ws://127.0.0.1:${port}/connect`, { headers: { authorization: `Bearer ${await tokenFor(user)}` } }));
    await Promise.race([once(c.ws, 'open'), c.closed.then((code) => Promise.reject(new Error(`closed ${code} before open`)))]);
    c.clientId = (await until(() => c.frames.find((f) => f.type === 'welcome'), 5_000, 'welcome'))!.clientId!;
    return c;
  }

  /** The HTTP status of a refused upgrade (or 101). */
  static async status(port: number, user: string): Promise<number> {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/connect`, { headers: { authorization: `Bearer ${await tokenFor(user)}` } });
    ws.on('error', () => {});
    return new Promise((resolve) => {
      ws.once('unexpected-response', (_req, res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
        ws.terminate();
      });
      ws.once('open', () => {
        resolve(101);
        ws.close();
      });
    });
  }

  /** Resolves once a `message` frame with `data` arrived. */
  async got(data: unknown, ms = 5_000): Promise<Frame> {
    return (await until(() => this.frames.find((f) => f.type === 'message' && JSON.stringify(f.data) === JSON.stringify(data)), ms, `message ${JSON.stringify(data)} at ${this.clientId}`))!;
  }

  async close(): Promise<void> {
    this.ws.close();
    await this.closed;
  }
}

/** One instance's config: a hub listener; `node` set: it dials that node. */
export function instanceYaml(o: { redis: string; id: string; prefix: string; node?: string; maxClientsPerUser?: number; grace?: string; history?: string }): string {
  return `admin: { listen: "127.0.0.1:0" }
runtime: { workers: 1, shutdownTimeout: 2s }
cluster: { redis: "${o.redis}", instanceId: ${o.id}, keyPrefix: "${o.prefix}", heartbeat: 200ms, deadAfter: 1s }
listeners:
  - name: hub
    protocol: hub
    listen: 127.0.0.1:0
    auth: { jwt: { secret: ${SECRET} } }
    ${o.node ? `nodes: [ { id: n1, url: "${o.node}" } ]` : 'discovery: { service: none }'}
    presenceGrace: ${o.grace ?? '300ms'}
    maxClientsPerUser: ${o.maxClientsPerUser ?? 16}
${o.history ? `    history: ${o.history}\n` : ''}`;
}

/**
 * Starts instances gw-a, gw-b, ... (the first dials `node`, or all with `nodeOnAll`) and waits
 * until each is linked to the others (not with `redisDown`: Redis is down at start).
 */
export async function startInstances(
  dir: ReturnType<typeof tempDir>,
  redis: string,
  n: number,
  opts: { node?: string; nodeOnAll?: boolean; maxClientsPerUser?: number; grace?: string; history?: string; redisDown?: boolean } = {},
): Promise<Daemon[]> {
  const prefix = `t${process.pid}-${Date.now()}:`;
  const ids = Array.from({ length: n }, (_, i) => `gw-${String.fromCharCode(97 + i)}`);
  const out = await Promise.all(
    ids.map((id, i) => Daemon.start(dir.write(`${id}.yaml`, instanceYaml({ redis, id, prefix, ...opts, node: i === 0 || opts.nodeOnAll ? opts.node : undefined })))),
  );
  // Killed if the test fails before stopping them (a stopped one is left as it is).
  onTestFinished(async () => {
    for (const d of out) await d[Symbol.asyncDispose]();
  });
  if (!opts.redisDown) for (const d of out) await linked(d, n);
  return out;
}

interface TreeNode {
  id: string;
  state: string;
  children: TreeNode[];
  [k: string]: unknown;
}

/** The `hub-cluster:hub` actor as `/actors` shows it. */
export async function hubCluster(d: Daemon): Promise<TreeNode | undefined> {
  const find = (t: TreeNode): TreeNode | undefined => (t.id === 'hub-cluster:hub' ? t : t.children.map(find).find(Boolean));
  return find(await d.json<TreeNode>('/actors'));
}

/** Waits until the instance's hub is linked and knows the other n-1 instances. */
export async function linked(d: Daemon, n: number, ms = 10_000): Promise<void> {
  await until(
    async () => {
      const c = await hubCluster(d);
      return c?.state === 'linked' && c.instances === n - 1;
    },
    ms,
    'hub linked to the other instances',
  );
}
