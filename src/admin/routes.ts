import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { filter, map } from 'rxjs';
import type { TreeOptions } from '../runtime/actor.ts';
import { AdminHttpError, intParam, sendJson } from './http.ts';
import type { AdminMetrics } from './metrics.ts';
import { actorEventFilter, type SseHub } from './sse.ts';
import type { AdminBackend } from './types.ts';
import { stateRoute } from './state-view.ts';
import { topRoute } from './top.ts';

/** The methods a route can serve (HEAD is derived from GET). */
export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH';

/** What a route handler gets. Throw an {@link AdminHttpError} to answer with a JSON error. */
export interface RouteContext {
  req: IncomingMessage;
  res: ServerResponse;
  path: string;
  query: URLSearchParams;
  /** The `:name` segments of the route's path. */
  params: Record<string, string>;
  backend: AdminBackend;
  metrics: AdminMetrics;
  sse: SseHub;
  log: Logger;
}

/**
 * Answers one request; a thrown error that is not an {@link AdminHttpError} becomes a 500 `internal`.
 *
 * @example
 * const handler: RouteHandler = ({ res, backend }) => sendJson(res, 200, backend.upstreams());
 */
export type RouteHandler = (ctx: RouteContext) => void | Promise<void>;

/**
 * One admin route. HEAD is answered by the GET handler (Node drops the body).
 *
 * @example
 * const services: AdminRoute = { path: '/v1/services/:id', methods: { GET: ({ params, res }) => sendJson(res, 200, find(params.id)) } };
 */
export interface AdminRoute {
  /** A literal path, with `:name` for a segment parameter: `/debug/shards/:n/crash`. */
  path: string;
  methods: Partial<Record<HttpMethod, RouteHandler>>;
  /** Served without the bearer token (health probes). */
  public?: boolean;
  /**
   * Served whatever the `Host` and `Origin`: probes and scrapers reach the daemon by any name,
   * and these routes change nothing. Every other route refuses foreign ones (`foreignRequest`).
   */
  anyHost?: boolean;
  /** Also accepts the token as `?token=` (the debug UI's page load, which cannot send headers). */
  queryToken?: boolean;
  /** Exists only in debug mode; otherwise every method answers 404 `debug_disabled`. */
  debugOnly?: boolean;
}

/** A matched route and its decoded `:name` parameters. */
export interface RouteMatch {
  route: AdminRoute;
  params: Record<string, string>;
}

/**
 * Finds the route for a path; the first match wins. A parameter that is not valid
 * percent-encoding matches nothing.
 *
 * @example
 * matchRoute(builtinRoutes(), '/debug/shards/1/crash')?.params; // { n: '1' }
 */
export function matchRoute(routes: readonly AdminRoute[], path: string): RouteMatch | undefined {
  const segs = path.split('/');
  for (const route of routes) {
    const pat = route.path.split('/');
    if (pat.length !== segs.length) continue;
    const params: Record<string, string> = {};
    let ok = true;
    for (let i = 0; i < pat.length && ok; i++) {
      const p = pat[i]!;
      if (p.startsWith(':')) {
        let v: string;
        try {
          v = decodeURIComponent(segs[i]!);
        } catch {
          return undefined;
        }
        if (v === '') ok = false;
        else params[p.slice(1)] = v;
      } else ok = p === segs[i];
    }
    if (ok) return { route, params };
  }
  return undefined;
}

/**
 * `Allow` for a route: its methods, plus HEAD where GET exists.
 *
 * @example
 * res.setHeader('allow', allowedMethods(route)); // 'GET, HEAD'
 */
export function allowedMethods(route: AdminRoute): string {
  const m = Object.keys(route.methods);
  if (m.includes('GET')) m.push('HEAD');
  return m.join(', ');
}

let uiHtml: string | undefined;
function ui(): string {
  uiHtml ??= readFileSync(new URL('./ui.html', import.meta.url), 'utf8');
  return uiHtml;
}

let version: string | undefined;
const startedAt = new Date(Date.now() - process.uptime() * 1000).toISOString();

/** `GET /info`: version, uptime and debug mode here, the config file and listeners from the backend. */
const infoRoute: RouteHandler = ({ res, backend }) => {
  version ??= (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  sendJson(res, 200, { version, node: process.version, pid: process.pid, startedAt, uptimeSeconds: Math.floor(process.uptime()), debug: backend.debug, ...backend.info?.() });
};

const TYPE_MAX = 200;

function treeOptions(query: URLSearchParams): TreeOptions {
  const opts: TreeOptions = {};
  const depth = intParam(query, 'depth', 1_000);
  const limit = intParam(query, 'limit', 1_000_000);
  if (depth !== undefined) opts.depth = depth;
  if (limit !== undefined) opts.limit = limit;
  const types = query.getAll('type');
  if (types.length > 1 || (types.length === 1 && (types[0] === '' || types[0]!.length > TYPE_MAX))) {
    throw new AdminHttpError(400, 'bad_query', `type must be one non-empty actor type of at most ${TYPE_MAX} characters`, { extra: { param: 'type' } });
  }
  if (types.length === 1) opts.type = types[0]!;
  return opts;
}

/**
 * The routes of the admin API (docs/admin-api.md), in match order.
 *
 * @example
 * const routes = [...builtinRoutes(), ...extraRoutes];
 */
export function builtinRoutes(): AdminRoute[] {
  return [
    {
      path: '/',
      queryToken: true,
      methods: {
        GET: ({ res }) => {
          const html = ui();
          res.writeHead(200, {
            'content-type': 'text/html; charset=utf-8',
            'content-length': Buffer.byteLength(html),
            'cache-control': 'no-store',
            'x-content-type-options': 'nosniff',
            // The page may carry the token in its URL: never send it on as a referrer.
            'referrer-policy': 'no-referrer',
            'content-security-policy': "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'",
          });
          res.end(html);
        },
      },
    },
    { path: '/healthz', public: true, anyHost: true, methods: { GET: ({ res }) => sendJson(res, 200, { status: 'ok' }) } },
    {
      path: '/readyz',
      public: true,
      anyHost: true,
      methods: {
        GET: ({ res, backend }) => {
          if (backend.ready()) return sendJson(res, 200, { ready: true });
          throw new AdminHttpError(503, 'not_ready', 'not ready', { extra: { ready: false, detail: backend.readyDetail() } });
        },
      },
    },
    {
      path: '/metrics',
      anyHost: true,
      methods: {
        GET: async ({ res, metrics }) => {
          const text = await metrics.registry.metrics();
          res.writeHead(200, { 'content-type': metrics.registry.contentType, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
          res.end(text);
        },
      },
    },
    { path: '/actors', methods: { GET: async ({ res, query, backend }) => sendJson(res, 200, await backend.tree(treeOptions(query))) } },
    { path: '/actors/top', methods: { GET: topRoute } },
    { path: '/info', methods: { GET: infoRoute } },
    {
      path: '/actors/events',
      debugOnly: true,
      methods: {
        GET: ({ res, query, backend, sse }) => {
          const keep = actorEventFilter(query);
          sse.open(res, backend.actorEvents$.pipe(filter(keep), map((e) => ({ event: e.type, data: e }))));
        },
      },
    },
    { path: '/upstreams', methods: { GET: ({ res, backend }) => sendJson(res, 200, backend.upstreams()) } },
    {
      // HAProxy's runtime API: drain, disable (maintenance), enable, or set the weight of one
      // backend without a reload. A reload keeps the state unless the backend is removed.
      path: '/upstreams/:name/backends/:address/:action',
      methods: {
        POST: ({ res, params, query, backend, log }) => {
          const action = params.action!;
          let change: { state: 'drain' | 'disable' | 'enable' } | { weight: number };
          if (action === 'drain' || action === 'disable' || action === 'enable') change = { state: action };
          else if (action === 'weight') {
            const raw = query.get('weight') ?? '';
            if (!/^\d{1,4}$/.test(raw) || Number(raw) > 1000) throw new AdminHttpError(400, 'bad_query', 'weight must be an integer from 0 to 1000 (?weight=N)', { extra: { param: 'weight' } });
            change = { weight: Number(raw) };
          } else throw new AdminHttpError(404, 'not_found', 'no such action: use drain, disable, enable or weight', { extra: { action } });
          const view = backend.backendAdmin?.(params.name!, params.address!, change);
          if (view === undefined) throw new AdminHttpError(404, 'no_such_backend', 'no such backend in this upstream', { extra: { upstream: params.name, backend: params.address } });
          log.info({ upstream: params.name, backend: params.address, action }, 'backend admin change');
          sendJson(res, 200, view);
        },
      },
    },
    { path: '/state', methods: { GET: stateRoute } },
    { path: '/hub', methods: { GET: ({ res, backend }) => sendJson(res, 200, backend.hubView?.() ?? { listeners: [] }) } },
    { path: '/config', methods: { GET: ({ res, backend }) => sendJson(res, 200, backend.config()) } },
    {
      path: '/cluster',
      methods: {
        GET: ({ res, backend }) => {
          const view = backend.cluster?.();
          if (!view) throw new AdminHttpError(404, 'not_found', 'cluster mode is off (no cluster key in the config)');
          sendJson(res, 200, view);
        },
      },
    },
    {
      path: '/reload',
      methods: {
        POST: async ({ res, backend, log }) => {
          const r = await backend.reload();
          if (!r.ok) {
            log.warn({ errors: r.errors }, 'reload rejected');
            throw new AdminHttpError(400, 'config_invalid', 'the new config is invalid; the running config is unchanged', { extra: { errors: r.errors } });
          }
          sendJson(res, 200, { added: r.added, removed: r.removed, changed: r.changed, restartRequired: r.restartRequired ?? [] });
        },
      },
    },
    {
      path: '/drain',
      methods: {
        POST: ({ res, backend, log }) => {
          log.info('drain requested');
          backend.drain();
          sendJson(res, 202, { draining: true });
        },
      },
    },
    {
      path: '/undrain',
      methods: {
        POST: async ({ res, backend, log }) => {
          if (!backend.undrain) throw new AdminHttpError(404, 'not_found', 'this daemon cannot undrain');
          log.info('undrain requested');
          if (!(await backend.undrain())) throw new AdminHttpError(409, 'not_draining', 'no POST /drain to end (not draining, or stopping)');
          sendJson(res, 200, { draining: false });
        },
      },
    },
    {
      path: '/debug/shards/:n/crash',
      debugOnly: true,
      methods: {
        POST: ({ res, params, backend, log }) => {
          const raw = params.n!;
          const n = /^\d{1,6}$/.test(raw) ? Number(raw) : -1;
          if (n < 0 || !backend.crashShard(n)) throw new AdminHttpError(404, 'no_such_shard', 'no such shard', { extra: { shard: raw } });
          log.warn({ shard: n }, 'shard crash injected');
          sendJson(res, 202, { shard: n, crashed: true });
        },
      },
    },
    {
      path: '/debug/shards/:n/hang',
      debugOnly: true,
      methods: {
        POST: ({ res, params, backend, log }) => {
          const raw = params.n!;
          const n = /^\d{1,6}$/.test(raw) ? Number(raw) : -1;
          const r = n < 0 ? 'no_such_shard' : (backend.hangShard?.(n) ?? 'no_such_shard');
          if (r === 'no_such_shard') throw new AdminHttpError(404, 'no_such_shard', 'no such shard', { extra: { shard: raw } });
          if (r === 'not_watched') throw new AdminHttpError(409, 'shard_not_watched', 'this shard has no watchdog (workers: 0, or runtime.watchdog: 0): nothing would end the hang', { extra: { shard: n } });
          log.warn({ shard: n }, 'shard hang injected');
          sendJson(res, 202, { shard: n, hung: true });
        },
      },
    },
    {
      path: '/debug/actors/:id/crash',
      debugOnly: true,
      methods: {
        POST: async ({ res, params, backend, log }) => {
          const id = params.id!;
          if (!(await backend.crashActor(id))) throw new AdminHttpError(404, 'no_such_actor', 'no actor with this id that can be crashed (control-plane state machines, connections, hub clients)', { extra: { actor: id } });
          log.warn({ actor: id }, 'actor crash injected');
          sendJson(res, 202, { actor: id, crashed: true });
        },
      },
    },
  ];
}
