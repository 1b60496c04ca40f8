/** The routes of an `http` listener. */
import { z } from 'zod';
import { auth, describeValue, int, name, positiveDuration, rateLimitShape, urlPath, withBurst } from './schema-common.ts';
import type { RateLimitKey, RouteConfig } from './types.ts';

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'CONNECT', 'TRACE'] as const;

const method = z.preprocess(
  (v) => (typeof v === 'string' ? v.toUpperCase() : v),
  z.enum(HTTP_METHODS),
);

const match = z.strictObject({
  host: z.string().min(1).transform((h) => h.toLowerCase()).optional(),
  pathPrefix: urlPath().default('/'),
  methods: z.array(method).min(1).optional(),
});

const rateLimitKey = z
  .string()
  .regex(/^(ip|header:[A-Za-z0-9!#$%&'*+.^_`|~-]+|jwt:[A-Za-z0-9_.-]+)$/, {
    error: (iss) => `expected ip, header:NAME or jwt:CLAIM, got ${describeValue(iss.input)}`,
  })
  .transform((k) => (k.startsWith('header:') ? k.toLowerCase() : k) as RateLimitKey);

/** What a route's `retries` apply to: a failed connect, a reset before the response head, or these statuses. */
export const RETRY_ON = ['connect-failure', 'reset', 502, 503, 504] as const;
const retryOn = z.union([z.enum(['connect-failure', 'reset']), z.literal(502), z.literal(503), z.literal(504)], {
  error: (iss) => `expected connect-failure, reset, 502, 503 or 504, got ${describeValue(iss.input)}`,
});

const cors = z.strictObject({
  origins: z.array(z.string().min(1)).min(1),
  credentials: z.boolean().default(false),
  maxAge: int(0).optional(),
  methods: z.array(method).min(1).optional(),
  headers: z.array(z.string().min(1)).optional(),
  exposeHeaders: z.array(z.string().min(1)).optional(),
});

// Route header rules: names are tokens, values latin1 without control characters (a CR or LF
// would split the head; a character above U+00FF would not survive the latin1 wire format).
// Framing fields cannot be set or removed: the gateway frames each message itself.
const FRAMING_HEADERS = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'te', 'trailer', 'upgrade', 'proxy-connection']);
function headerNameProblem(n: string, what: 'set' | 'removed'): string | undefined {
  if (!/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(n)) return `expected a header name, got ${describeValue(n)}`;
  const lower = n.toLowerCase();
  if (FRAMING_HEADERS.has(lower)) return `${JSON.stringify(n)} cannot be ${what} (the gateway frames the message itself)`;
  if (what === 'removed' && lower === 'host') return '"Host" cannot be removed (an HTTP/1.1 request needs it; set it instead)';
  return undefined;
}
const headerValue = z.string().refine((v) => !/[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]/.test(v), {
  error: 'a header value cannot contain CR, LF, NUL, another control character or a character above U+00FF',
});
const headerRules = z.strictObject({
  // Names are checked here rather than as record keys, so that the message reaches the user.
  set: z.record(z.string(), headerValue).superRefine((m, ctx) => {
    const seen = new Set<string>();
    for (const k of Object.keys(m)) {
      const dup = seen.has(k.toLowerCase());
      seen.add(k.toLowerCase());
      const problem = dup ? `${JSON.stringify(k)} is set twice (header names are case-insensitive)` : headerNameProblem(k, 'set');
      if (problem) ctx.addIssue({ code: 'custom', path: [k], input: k, message: problem });
    }
  }).optional(),
  remove: z.array(z.string().superRefine((n, ctx) => {
    const problem = headerNameProblem(n, 'removed');
    if (problem) ctx.addIssue({ code: 'custom', input: n, message: problem });
  })).optional(),
});

const route = z.strictObject({
  name: name().optional(),
  match: match.prefault({}),
  upstream: name().optional(),
  split: z.array(z.strictObject({ upstream: name(), weight: int(0).default(1) })).min(1).optional(),
  sticky: z.strictObject({ header: z.string().min(1).optional(), cookie: z.string().min(1).optional() }).optional(),
  stripPrefix: z.boolean().default(false),
  auth: auth().optional(),
  rateLimit: z.strictObject({ ...rateLimitShape, key: rateLimitKey.default('ip') }).transform(withBurst).optional(),
  cors: cors.optional(),
  timeout: positiveDuration().default(30_000),
  idleTimeout: positiveDuration().default(60_000),
  retries: int(0).max(10).default(0),
  retryOn: z.array(retryOn).min(1).default(['connect-failure', 'reset']),
  websocket: z.boolean().default(false),
  headers: z.strictObject({ request: headerRules.optional(), response: headerRules.optional() }).optional(),
});

/**
 * The `routes:` list of an http listener; a route without a name is called `route-INDEX`.
 *
 * @example
 * routesSchema.parse([{ upstream: 'app' }])[0]; // { name: 'route-0', match: { pathPrefix: '/' }, ... }
 */
export const routesSchema = z
  .array(route)
  .min(1, { error: 'an http listener needs at least one route' })
  .transform((rs): RouteConfig[] => rs.map((r, i) => ({ ...r, name: r.name ?? `route-${i}` })));
