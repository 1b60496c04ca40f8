import type { IncomingMessage } from 'node:http';
import { concat, filter, map, of } from 'rxjs';
import { AdminHttpError, sendJson } from '../admin/http.ts';
import type { AdminRoute } from '../admin/routes.ts';
import { RegistryDownError, RegistryFullError, type ServiceRegistry } from './registry.ts';
import { parseRegistration, RegistrationError, type ServiceInstance } from './service.ts';

/** Largest registration body accepted. */
const MAX_BODY = 64 * 1024;

/** The public JSON of an instance (`host` and `port` are internal). */
function publicView(s: ServiceInstance): Record<string, unknown> {
  return { id: s.id, name: s.name, address: s.address, tags: s.tags, metadata: s.metadata, ttl: s.ttl, expiresAt: s.expiresAt };
}

/**
 * Reads a JSON body of at most {@link MAX_BODY} bytes; 413 or 400 otherwise. The content type
 * is not checked (`curl -d` sends a form type; Consul's API takes any): the body must parse as
 * JSON, and cross-site requests are refused by the admin server's Origin check already.
 */
async function readJson(req: IncomingMessage): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY) throw new AdminHttpError(413, 'payload_too_large', `a registration is at most ${MAX_BODY} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new AdminHttpError(413, 'payload_too_large', `a registration is at most ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new AdminHttpError(400, 'bad_request', 'the body is not valid JSON');
  }
}

/** The registry's own errors as admin answers. */
function asHttp(err: unknown): never {
  if (err instanceof RegistrationError) throw new AdminHttpError(400, 'bad_request', err.message, { extra: { problems: err.problems } });
  if (err instanceof RegistryFullError) throw new AdminHttpError(507, 'registry_full', err.message);
  if (err instanceof RegistryDownError) throw new AdminHttpError(503, 'unavailable', err.message, { headers: { 'retry-after': '1' } });
  throw err;
}

const notFound = (id: string): AdminHttpError => new AdminHttpError(404, 'no_such_service', `no service instance ${JSON.stringify(id)}`);

/**
 * The service registry's admin routes (docs/registry.md): register, list, get, heartbeat,
 * deregister, and the SSE watch that starts with a snapshot.
 *
 * @example
 * startAdminServer({ ..., routes: registryRoutes(registry) });
 */
export function registryRoutes(registry: ServiceRegistry): AdminRoute[] {
  return [
    {
      path: '/v1/services/events',
      methods: {
        GET: ({ res, query, sse }) => {
          const name = query.get('name') ?? undefined;
          const snapshot = of({ event: 'snapshot', data: { services: registry.list(name).map(publicView) } });
          // A watch by name sees only that service's changes.
          const changes = registry.events$.pipe(
            filter((e) => name === undefined || e.service.name === name),
            map((e) => ({ event: e.type, data: publicView(e.service) })),
          );
          sse.open(res, concat(snapshot, changes));
        },
      },
    },
    {
      path: '/v1/services',
      methods: {
        GET: ({ res, query }) => {
          const name = query.get('name') ?? undefined;
          const tag = query.get('tag') ?? undefined;
          const services = registry.list(name).filter((s) => tag === undefined || s.tags.includes(tag));
          sendJson(res, 200, { services: services.map(publicView) });
        },
        POST: async ({ req, res }) => {
          const body = await readJson(req);
          try {
            const { created, service } = await registry.register(parseRegistration(body));
            sendJson(res, created ? 201 : 200, { id: service.id, service: publicView(service) });
          } catch (err) {
            asHttp(err);
          }
        },
      },
    },
    {
      path: '/v1/services/:id/heartbeat',
      methods: {
        PUT: async ({ res, params }) => {
          const s = await registry.heartbeat(params.id!);
          if (!s) throw notFound(params.id!);
          sendJson(res, 200, publicView(s));
        },
      },
    },
    {
      path: '/v1/services/:id',
      methods: {
        GET: ({ res, params }) => {
          const s = registry.get(params.id!);
          if (!s) throw notFound(params.id!);
          sendJson(res, 200, publicView(s));
        },
        DELETE: async ({ res, params }) => {
          if (!(await registry.deregister(params.id!))) throw notFound(params.id!);
          res.writeHead(204).end();
        },
      },
    },
  ];
}
