/**
 * JWT auth per route of the HTTP listener, end to end: a real daemon in front of a node:http
 * backend that echoes the headers it received, tokens minted with jose (HS256, RS256, ES256, and
 * RS256 from a JWKS served on 127.0.0.1 that rotates its keys). Asserted: what the client gets
 * (status, `WWW-Authenticate`, body) and what reaches the backend (nothing for a refused token;
 * `forwardClaims` headers, `Authorization`, no `Proxy-Authorization` for an accepted one), the
 * rate limit keyed by `jwt:sub`, and CORS preflights that need no token.
 *
 * `Authorization` is forwarded to the backend once the gateway verified it (the backend may
 * read the token's other claims, or check it again); only `Proxy-Authorization`, meant for the
 * gateway, is dropped on an authenticated route (src/http/middleware/headers.ts, AUTHENTICATED).
 */
import http from 'node:http';
import { once } from 'node:events';
import net from 'node:net';
import { generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { SignJWT, UnsecuredJWT, exportJWK, importPKCS8, type JWK, type JWTPayload } from 'jose';
import { Daemon, metric, tempDir, until } from '../helpers/daemon.ts';
import { readUntilClosed } from '../helpers/net.ts';

const SECRET = 'http-auth-test-secret-0123456789-abcdefghij';
const enc = (s: string) => new TextEncoder().encode(s);
const now = () => Math.floor(Date.now() / 1000);

// ---- the echo backend and a raw client ------------------------------------------------------

interface Seen {
  url: string;
  raw: string[];
}

async function echoBackend(): Promise<{ port: number; seen: Seen[]; close(): Promise<void> }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const rec = { url: req.url ?? '', raw: req.rawHeaders };
    seen.push(rec);
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(rec));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    seen,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

/** A JWKS endpoint on 127.0.0.1:0 serving `keys` (changeable), counting its requests. */
async function jwksServer(keys: JWK[]): Promise<{ url: string; keys: JWK[]; requests: number; close(): Promise<void> }> {
  const state = { keys, requests: 0 };
  const server = http.createServer((_req, res) => {
    state.requests++;
    res.writeHead(200, { 'content-type': 'application/json', connection: 'close' });
    res.end(JSON.stringify({ keys: state.keys }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/jwks`,
    get keys() {
      return state.keys;
    },
    set keys(k: JWK[]) {
      state.keys = k;
    },
    get requests() {
      return state.requests;
    },
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

interface Res {
  status: number;
  headers: [string, string][];
  body: string;
  /** The backend's echo, when the request reached it. */
  seen: Seen | undefined;
}

function header(r: Res, name: string): string[] {
  return r.headers.filter(([n]) => n === name).map(([, v]) => v);
}
function got(s: Seen, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < s.raw.length; i += 2) if (s.raw[i]!.toLowerCase() === name) out.push(s.raw[i + 1]!);
  return out;
}

/** One request on a new connection (`Connection: close`), read until the gateway closes it. */
async function send(port: number, path: string, headers: [string, string][] = [], method = 'GET'): Promise<Res> {
  let req = `${method} ${path} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n`;
  for (const [n, v] of headers) req += `${n}: ${v}\r\n`;
  const text = await readUntilClosed(port, `${req}\r\n`);
  const end = text.indexOf('\r\n\r\n');
  expect(end, `a complete response head in ${JSON.stringify(text)}`).toBeGreaterThan(0);
  const lines = text.slice(0, end).split('\r\n');
  const res: Res = {
    status: Number(lines[0]!.split(' ')[1]),
    headers: lines.slice(1).map((l): [string, string] => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]),
    body: text.slice(end + 4),
    seen: undefined,
  };
  if (res.status === 200) res.seen = JSON.parse(res.body) as Seen;
  return res;
}

const bearer = (t: string): [string, string] => ['Authorization', `Bearer ${t}`];

/** Asserts a 401 with the RFC 6750 challenge: no error code without a token, else invalid_token with `reason`. */
function expect401(r: Res, reason: string | undefined): void {
  expect(r.status).toBe(401);
  expect(r.seen).toBeUndefined();
  const body = JSON.parse(r.body) as { error: string; requestId: string };
  expect(body).toEqual({ error: 'unauthorized', requestId: header(r, 'x-request-id')[0] });
  expect(header(r, 'www-authenticate')).toEqual([
    reason === undefined ? 'Bearer realm="gatehouse"' : `Bearer realm="gatehouse", error="invalid_token", error_description="${reason}"`,
  ]);
}

// ---- keys and tokens --------------------------------------------------------------------------

async function hs(claims: JWTPayload, opts: { exp?: number; nbf?: number; secret?: string } = {}): Promise<string> {
  const j = new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt(now() - 120).setExpirationTime(opts.exp ?? now() + 3600);
  if (opts.nbf !== undefined) j.setNotBefore(opts.nbf);
  return j.sign(enc(opts.secret ?? SECRET));
}

interface Pair {
  pem: string;
  sign(claims: JWTPayload, kid?: string): Promise<string>;
  jwk(kid: string): Promise<JWK>;
}

async function pair(kind: 'rsa' | 'ec'): Promise<Pair> {
  const alg = kind === 'rsa' ? 'RS256' : 'ES256';
  const { publicKey, privateKey } =
    kind === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const key = await importPKCS8(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), alg);
  return {
    pem,
    sign: (claims, kid) => new SignJWT(claims).setProtectedHeader({ alg, ...(kid && { kid }) }).setExpirationTime('1h').sign(key),
    jwk: async (kid) => ({ ...(await exportJWK(publicKey)), kid, alg, use: 'sig' }),
  };
}

// ---- the daemon ---------------------------------------------------------------------------

describe('JWT auth on HTTP routes, end to end', () => {
  let backend: Awaited<ReturnType<typeof echoBackend>>;
  let jwks: Awaited<ReturnType<typeof jwksServer>>;
  let rsa: Pair;
  let ec: Pair;
  let k1: Pair;
  let k2: Pair;
  let gh: Daemon;
  let dir: ReturnType<typeof tempDir>;
  let port: number;

  beforeAll(async () => {
    [backend, rsa, ec, k1, k2] = await Promise.all([echoBackend(), pair('rsa'), pair('ec'), pair('rsa'), pair('rsa')]);
    jwks = await jwksServer([await k1.jwk('k1')]);
    const secret = { secret: SECRET, algorithms: ['HS256'] };
    const cfg = {
      admin: { listen: '127.0.0.1:0' },
      runtime: { workers: 1, shutdownTimeout: '5s' },
      log: { level: 'info' },
      upstreams: [{ name: 'app', backends: [`127.0.0.1:${backend.port}`], healthCheck: { enabled: false } }],
      listeners: [
        {
          name: 'api',
          protocol: 'http',
          listen: '127.0.0.1:0',
          routes: [
            { name: 'hs', match: { pathPrefix: '/hs' }, upstream: 'app', auth: { jwt: { ...secret, clockSkew: '10s', forwardClaims: { sub: 'x-user-id', role: 'X-User-Role' } } } },
            { name: 'rs', match: { pathPrefix: '/rs' }, upstream: 'app', auth: { jwt: { publicKey: rsa.pem, algorithms: ['RS256'] } } },
            { name: 'es', match: { pathPrefix: '/es' }, upstream: 'app', auth: { jwt: { publicKey: ec.pem, algorithms: ['ES256'] } } },
            { name: 'jwks', match: { pathPrefix: '/jwks' }, upstream: 'app', auth: { jwt: { jwksUrl: jwks.url, algorithms: ['RS256'] } } },
            { name: 'rl', match: { pathPrefix: '/rl' }, upstream: 'app', auth: { jwt: secret }, rateLimit: { perSecond: 0.05, burst: 2, key: 'jwt:sub' } },
            { name: 'cors', match: { pathPrefix: '/cors', methods: ['GET'] }, upstream: 'app', auth: { jwt: secret }, cors: { origins: ['https://app.example.com'] } },
            { name: 'open', match: { pathPrefix: '/open' }, upstream: 'app' },
          ],
        },
      ],
    };
    dir = tempDir();
    gh = await Daemon.start(dir.write('gh.yaml', JSON.stringify(cfg, null, 1)));
    port = gh.port('api');
  });

  afterAll(async () => {
    await gh?.[Symbol.asyncDispose]();
    await Promise.all([backend?.close(), jwks?.close()]);
    dir?.[Symbol.dispose]();
  });

  test('no token: 401 with a bare Bearer challenge (no error=), the backend not reached', async () => {
    const before = backend.seen.length;
    expect401(await send(port, '/hs'), undefined);
    expect401(await send(port, '/hs', [['Authorization', 'Basic dXNlcjpwYXNz']]), undefined);
    expect(backend.seen.length).toBe(before);
  });

  test('a kept-alive connection goes on after a 401', async () => {
    const token = await hs({ sub: 'k' });
    const c = net.connect({ port, host: '127.0.0.1' });
    c.on('error', () => {});
    await once(c, 'connect');
    let buf = '';
    c.on('data', (d: Buffer) => (buf += d.toString('latin1')));
    const statuses = async (n: number): Promise<number[]> => {
      await until(() => (buf.match(/HTTP\/1\.1 \d{3}/g) ?? []).length >= n, 10_000, `${n} responses`);
      return (buf.match(/HTTP\/1\.1 \d{3}/g) ?? []).map((l) => Number(l.slice(9)));
    };
    try {
      const req = (auth: string) => `GET /hs HTTP/1.1\r\nHost: api.test\r\n${auth}\r\n`;
      c.write(req(''));
      expect(await statuses(1)).toEqual([401]);
      c.write(req(`Authorization: Bearer ${token}\r\n`));
      expect(await statuses(2)).toEqual([401, 200]);
      // Pipelined: a 401 between two accepted requests.
      c.write(req(`Authorization: Bearer ${token}\r\n`) + req('Authorization: Bearer bad\r\n') + req(`Authorization: Bearer ${token}\r\n`));
      expect(await statuses(5)).toEqual([401, 200, 200, 401, 200]);
    } finally {
      c.destroy();
    }
  });

  test('a bad token: 401 with error="invalid_token" and the reason', async () => {
    expect401(await send(port, '/hs', [bearer('not-a-jwt')]), 'malformed');
    expect401(await send(port, '/hs', [bearer(await hs({ sub: 'u' }, { secret: 'another-secret-of-enough-length-0123456789' }))]), 'bad_signature');
  });

  test('HS256: a valid token reaches the backend with Authorization; forwardClaims replace what the client sent', async () => {
    const token = await hs({ sub: 'alice', role: 'reader' });
    const r = await send(port, '/hs/x', [bearer(token), ['X-User-Id', 'mallory'], ['x-user-role', 'admin'], ['Proxy-Authorization', 'Basic cHJveHk6cHc=']]);
    expect(r.status).toBe(200);
    const s = r.seen!;
    expect(got(s, 'x-user-id')).toEqual(['alice']);
    expect(got(s, 'x-user-role')).toEqual(['reader']);
    expect(got(s, 'authorization')).toEqual([`Bearer ${token}`]);
    expect(got(s, 'proxy-authorization')).toEqual([]);
  });

  test('forwardClaims: a claim the token lacks leaves its header unset, and the client\'s copy is still removed', async () => {
    const r = await send(port, '/hs', [bearer(await hs({ sub: 'bob' })), ['X-User-Role', 'admin']]);
    expect(r.status).toBe(200);
    expect(got(r.seen!, 'x-user-id')).toEqual(['bob']);
    expect(got(r.seen!, 'x-user-role')).toEqual([]);
  });

  test('forwardClaims: a list is joined; a value that cannot be a header (CR LF) is left unset, nothing injected', async () => {
    const list = await send(port, '/hs', [bearer(await hs({ sub: 'carol', role: ['reader', 'writer'] }))]);
    expect(got(list.seen!, 'x-user-role')).toEqual(['reader, writer']);
    const evil = await send(port, '/hs', [bearer(await hs({ sub: 'eve\r\nX-Admin: true', role: 'r\nX-Admin: true' }))]);
    expect(evil.status).toBe(200);
    expect(got(evil.seen!, 'x-user-id')).toEqual([]);
    expect(got(evil.seen!, 'x-user-role')).toEqual([]);
    expect(got(evil.seen!, 'x-admin')).toEqual([]);
  });

  test('Proxy-Authorization passes on a route without auth', async () => {
    const r = await send(port, '/open', [['Proxy-Authorization', 'Basic cHJveHk6cHc='], ['X-User-Id', 'mallory']]);
    expect(r.status).toBe(200);
    expect(got(r.seen!, 'proxy-authorization')).toEqual(['Basic cHJveHk6cHc=']);
    expect(got(r.seen!, 'x-user-id')).toEqual(['mallory']);
  });

  test('clock skew: exp and nbf within clockSkew (10 s) are accepted, beyond it refused', async () => {
    expect((await send(port, '/hs', [bearer(await hs({ sub: 'u' }, { exp: now() - 3 }))])).status).toBe(200);
    expect401(await send(port, '/hs', [bearer(await hs({ sub: 'u' }, { exp: now() - 60 }))]), 'expired');
    expect((await send(port, '/hs', [bearer(await hs({ sub: 'u' }, { nbf: now() + 3 }))])).status).toBe(200);
    expect401(await send(port, '/hs', [bearer(await hs({ sub: 'u' }, { nbf: now() + 60 }))]), 'not_yet_valid');
  });

  test('alg none is refused, even on an HS256 route', async () => {
    const none = new UnsecuredJWT({ sub: 'u' }).setIssuedAt().setExpirationTime('1h').encode();
    expect401(await send(port, '/hs', [bearer(none)]), 'alg_not_allowed');
    expect401(await send(port, '/rs', [bearer(none)]), 'alg_not_allowed');
  });

  test('RS256 and ES256 public keys: their tokens pass, the other key\'s are refused', async () => {
    expect(got((await send(port, '/rs', [bearer(await rsa.sign({ sub: 'r' }))])).seen!, 'authorization')).toHaveLength(1);
    expect((await send(port, '/es', [bearer(await ec.sign({ sub: 'e' }))])).status).toBe(200);
    // An RS256 token signed by another RSA key; an ES256 token on the RS256 route.
    expect401(await send(port, '/rs', [bearer(await k1.sign({ sub: 'r' }))]), 'bad_signature');
    expect401(await send(port, '/rs', [bearer(await ec.sign({ sub: 'e' }))]), 'alg_not_allowed');
  });

  test('alg confusion: an HS256 token signed with the RSA public key as the secret is refused on the RS256 route', async () => {
    const forged = await new SignJWT({ sub: 'admin' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(enc(rsa.pem));
    expect401(await send(port, '/rs', [bearer(forged)]), 'alg_not_allowed');
  });

  test('JWKS: keys fetched on first use; a new kid after a rotation is fetched; an unknown kid within the cooldown is not', async () => {
    expect((await send(port, '/jwks', [bearer(await k1.sign({ sub: 'j' }, 'k1'))])).status).toBe(200);
    const fetched = jwks.requests;
    expect(fetched).toBeGreaterThanOrEqual(1);
    // The issuer rotates: k2 is published; a k2 token makes the gateway fetch the set again.
    jwks.keys = [await k1.jwk('k1'), await k2.jwk('k2')];
    expect((await send(port, '/jwks', [bearer(await k2.sign({ sub: 'j' }, 'k2'))])).status).toBe(200);
    expect(jwks.requests).toBe(fetched + 1);
    // k1 still verifies from the cache, without a fetch.
    expect((await send(port, '/jwks', [bearer(await k1.sign({ sub: 'j' }, 'k1'))])).status).toBe(200);
    // A kid the set does not have, right after that refetch: no_key, and no new fetch.
    expect401(await send(port, '/jwks', [bearer(await rsa.sign({ sub: 'j' }, 'k9'))]), 'no_key');
    expect(jwks.requests).toBe(fetched + 1);
  });

  test('rate limit keyed by jwt:sub: each user has its own bucket; refused tokens use none', async () => {
    const alice = await hs({ sub: 'alice' });
    const bob = await hs({ sub: 'bob' });
    expect401(await send(port, '/rl', [bearer('nope')]), 'malformed');
    const statuses: number[] = [];
    for (const t of [alice, alice, alice, bob, bob, bob]) statuses.push((await send(port, '/rl', [bearer(t)])).status);
    expect(statuses).toEqual([200, 200, 429, 200, 200, 429]);
    const m = await (await gh.admin('/metrics')).text();
    expect(metric(m, 'gatehouse_ratelimit_rejected_total', { listener: 'api', route: 'rl' })).toBe(2);
  });

  test('a CORS preflight on a JWT route needs no token: 204, the backend not reached; the actual request does', async () => {
    const before = backend.seen.length;
    const pre = await send(port, '/cors', [['Origin', 'https://app.example.com'], ['Access-Control-Request-Method', 'GET']], 'OPTIONS');
    expect(pre.status).toBe(204);
    expect(header(pre, 'access-control-allow-origin')).toEqual(['https://app.example.com']);
    expect(backend.seen.length).toBe(before);
    expect401(await send(port, '/cors', [['Origin', 'https://app.example.com']]), undefined);
    const ok = await send(port, '/cors', [['Origin', 'https://app.example.com'], bearer(await hs({ sub: 'c' }))]);
    expect(ok.status).toBe(200);
    expect(header(ok, 'access-control-allow-origin')).toEqual(['https://app.example.com']);
  });

  test('401s are counted per route', async () => {
    const m = await (await gh.admin('/metrics')).text();
    expect(metric(m, 'gatehouse_http_requests_total', { listener: 'api', route: 'hs', code: '401' })).toBeGreaterThanOrEqual(6);
  });
});
