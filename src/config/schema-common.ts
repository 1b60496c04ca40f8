/**
 * Building blocks shared by the config schema: units, names, URLs, rate limits and JWT auth.
 * Messages are written for the user; `messages.ts` turns zod's own issues into the same style.
 */
import { z } from 'zod';
import { UnitError, parseDuration, parseHostPort, parseListen, parseSize } from './units.ts';
import type { HostPort } from './units.ts';
import type { JwtAlgorithm, JwtConfig, RateLimitConfig } from './types.ts';
import { jwksUrlProblem } from '../auth/policy.ts';
import { compileCidrs } from '../http/middleware/ip.ts';

/** Describes a YAML value for messages: `a string ("x")`, `a list`, `null`. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `a string (${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)})`;
  if (typeof v === 'boolean') return String(v);
  return `a ${typeof v} (${String(v)})`;
}

function unit<T>(expected: string, parse: (v: string | number) => T) {
  return z.unknown().transform((v, ctx): T => {
    if (typeof v !== 'string' && typeof v !== 'number') {
      ctx.issues.push({ code: 'custom', input: v, message: v === undefined ? 'required' : `expected ${expected}, got ${describeValue(v)}` });
      return z.NEVER;
    }
    try {
      return parse(v);
    } catch (err) {
      if (!(err instanceof UnitError)) throw err;
      ctx.issues.push({ code: 'custom', input: v, message: err.message });
      return z.NEVER;
    }
  });
}

/** A duration (`500ms`, `5s`, `1m30s`, or a number of ms) in milliseconds, >= 0. */
export const duration = () => unit('a duration like 500ms or 5s', parseDuration);

/** A duration that must be greater than zero. */
export const positiveDuration = () =>
  unit('a duration like 500ms or 5s', (v) => {
    const ms = parseDuration(v);
    if (ms <= 0) throw new UnitError('must be greater than 0');
    return ms;
  });

/** A size (`64KiB`, `1MB`, or a number of bytes) in bytes, >= 1. */
export const size = () =>
  unit('a size like 64KiB', (v) => {
    const bytes = parseSize(v);
    if (bytes < 1) throw new UnitError('must be at least 1 byte');
    return bytes;
  });

/** A listen address: `host:port`, `[ipv6]:port` or a bare port. */
/** A size, where 0 means no limit. */
export const sizeOrNone = () => unit('a size like 10MiB, or 0 for no limit', parseSize);

/** An address or a CIDR block (`10.0.0.0/8`, `fd00::/8`, `127.0.0.1`). */
export const cidr = () =>
  z.string().superRefine((v, ctx) => {
    try {
      compileCidrs([v]);
    } catch (err) {
      ctx.addIssue({ code: 'custom', input: v, message: (err as Error).message });
    }
  });

export const listenAddress = () => unit<HostPort>('an address like 127.0.0.1:8080 or a port', parseListen);

/** An address to connect to: `host:port` or `[ipv6]:port`. */
export const hostPort = () =>
  unit<HostPort>('an address like 127.0.0.1:9001', (v) => {
    if (typeof v === 'number') throw new UnitError(`address ${v} has no host: use host:port`);
    return parseHostPort(v);
  });

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** A name used in actor ids, metric labels and references: letters, digits, `-`, `_`, `.`. `required` is the message when missing. */
export const name = (required?: string) =>
  z.string({ error: (iss) => (iss.input === undefined ? required : undefined) }).regex(NAME, {
    error: (iss) => `invalid name ${JSON.stringify(iss.input)}: use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit`,
  });

/** An integer >= `min`. */
export const int = (min: number) => z.int().min(min);

/** A path that starts with `/`. */
export const urlPath = () =>
  z.string().startsWith('/', { error: (iss) => `must start with "/", got ${describeValue(iss.input)}` });

/** An absolute URL whose scheme is one of `schemes` (`['ws:', 'wss:']`). */
export const urlWith = (schemes: string[]) =>
  z.string().refine(
    (s) => URL.canParse(s) && schemes.includes(new URL(s).protocol),
    { error: (iss) => `expected a ${schemes.map((p) => `${p}//`).join(' or ')} URL, got ${describeValue(iss.input)}` },
  );

/** A token bucket. `burst` defaults to `perSecond` (rounded up, at least 1). */
export const rateLimitShape = {
  perSecond: z.number().positive(),
  burst: int(1).optional(),
};

export const withBurst = <T extends { perSecond: number; burst?: number | undefined }>(r: T): T & RateLimitConfig => ({
  ...r,
  burst: r.burst ?? Math.max(1, Math.ceil(r.perSecond)),
});

export const rateLimit = () => z.strictObject(rateLimitShape).transform(withBurst);

export const JWT_ALGORITHMS = [
  'HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512',
  'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA',
] as const satisfies readonly JwtAlgorithm[];

// A header name (RFC 9110 token). Framing and hop-by-hop headers cannot carry claims: a claim
// there would let a token holder steer how the request is framed or routed upstream.
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;
const RESERVED_HEADERS = new Set([
  'host', 'content-length', 'transfer-encoding', 'connection', 'upgrade', 'te', 'trailer',
  'keep-alive', 'proxy-connection', 'proxy-authorization', 'authorization', 'cookie',
]);

const forwardClaims = z.record(
  z.string().min(1),
  z
    .string()
    .regex(HEADER_NAME, { error: (iss) => `expected a header name, got ${describeValue(iss.input)}` })
    .refine((h) => !RESERVED_HEADERS.has(h.toLowerCase()), { error: (iss) => `${JSON.stringify(iss.input)} cannot be set from a claim (it frames or routes the request)` })
    .transform((h) => h.toLowerCase()),
);

const jwksUrl = () =>
  z.string().superRefine((url, ctx) => {
    const problem = jwksUrlProblem(url);
    if (problem) ctx.addIssue({ code: 'custom', input: url, message: problem });
  });

const jwt = z
  .strictObject({
    secret: z.string().min(1).optional(),
    publicKey: z.string().min(1).optional(),
    jwksUrl: jwksUrl().optional(),
    issuer: z.string().min(1).optional(),
    audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
    algorithms: z.array(z.enum(JWT_ALGORITHMS)).min(1).optional(),
    clockSkew: duration().default(30_000),
    requireExp: z.boolean().default(true),
    forwardClaims: forwardClaims.optional(),
  })
  .transform((j): JwtConfig => ({
    ...j,
    audience: typeof j.audience === 'string' ? [j.audience] : j.audience,
    // HMAC only with a shared secret, never with a public key (the classic alg-confusion hole).
    // `checks.ts` requires `algorithms` with a public key or a JWKS; the fallback only fills the type.
    algorithms: j.algorithms ?? (j.secret !== undefined ? ['HS256'] : ['RS256', 'ES256']),
  }));

/** `auth: { jwt: {...} }`. `required` is the message when the key is missing. */
export const auth = (required?: string) =>
  z.strictObject(
    { jwt },
    { error: (iss) => (iss.code === 'invalid_type' && iss.input === undefined && required ? required : undefined) },
  );
