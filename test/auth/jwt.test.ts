/**
 * The JWT verifier (src/auth/jwt.ts) on its own: HMAC, PEM public keys and a real JWKS server on
 * port 0, asserting on the `TokenError` reason a caller sees; plus the HTTP helpers (the 401
 * challenge and forwardClaims).
 */
import http from 'node:http';
import { once } from 'node:events';
import type net from 'node:net';
import { describe, expect, test } from 'vitest';
import { SignJWT, UnsecuredJWT, exportJWK, exportSPKI, generateKeyPair, type JWK, type JWTPayload } from 'jose';
import { bearerChallenge, bearerToken, createJwtVerifier, forwardClaims, JwtConfigError, TokenError, type TokenReason } from '../../src/auth/jwt.ts';

const SECRET = 'jwt-test-secret-of-reasonable-length-0123456789';
const enc = (s: string) => new TextEncoder().encode(s);
const now = () => Math.floor(Date.now() / 1000);

async function hs256(claims: JWTPayload, opts: { secret?: string; exp?: number | string | null; nbf?: number | string } = {}): Promise<string> {
  let j = new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt();
  if (opts.exp !== null) j = j.setExpirationTime(opts.exp ?? '1h');
  if (opts.nbf !== undefined) j = j.setNotBefore(opts.nbf);
  return j.sign(enc(opts.secret ?? SECRET));
}

async function reason(p: Promise<unknown>): Promise<TokenReason | 'accepted'> {
  try {
    await p;
    return 'accepted';
  } catch (err) {
    expect(err).toBeInstanceOf(TokenError);
    expect((err as TokenError).code).toBe('GH_ERR_TOKEN');
    return (err as TokenError).reason;
  }
}

/** A JWKS endpoint on port 0 serving `keys` (changeable), counting the requests it got. */
async function jwksServer(keys: JWK[]): Promise<{ url: string; keys: JWK[]; requests: number; [Symbol.asyncDispose](): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const state = { keys, requests: 0 };
  const server = http.createServer((_req, res) => {
    state.requests++;
    res.writeHead(200, { 'content-type': 'application/json', connection: 'close' });
    res.end(JSON.stringify({ keys: state.keys }));
  });
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
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
    async [Symbol.asyncDispose]() {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

async function rsaKey(kid: string): Promise<{ jwk: JWK; sign(claims: JWTPayload): Promise<string> }> {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };
  return { jwk, sign: (claims) => new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid }).setExpirationTime('1h').sign(privateKey) };
}

describe('JWT verifier', () => {
  test('HS256: a good token gives its sub; expiry and not-before are checked with 30 s of skew', async () => {
    const v = createJwtVerifier({ secret: SECRET, algorithms: ['HS256'] });
    expect(v.algorithms).toEqual(['HS256']);
    expect(await v.verify(await hs256({ sub: 'u1' }))).toMatchObject({ userId: 'u1', alg: 'HS256' });
    // Within the skew: accepted. Beyond it: refused.
    expect(await reason(v.verify(await hs256({ sub: 'u1' }, { exp: now() - 10 })))).toBe('accepted');
    expect(await reason(v.verify(await hs256({ sub: 'u1' }, { exp: now() - 60 })))).toBe('expired');
    expect(await reason(v.verify(await hs256({ sub: 'u1' }, { nbf: now() + 10 })))).toBe('accepted');
    expect(await reason(v.verify(await hs256({ sub: 'u1' }, { nbf: now() + 120 })))).toBe('not_yet_valid');
  });

  test('iss and aud are checked when configured; sub is required and must be a non-empty string', async () => {
    const v = createJwtVerifier({ secret: SECRET, algorithms: ['HS256'], issuer: 'https://auth', audience: ['gate', 'gate2'] });
    expect(await reason(v.verify(await hs256({ sub: 'u1', iss: 'https://auth', aud: 'gate2' })))).toBe('accepted');
    expect(await reason(v.verify(await hs256({ sub: 'u1', iss: 'https://evil', aud: 'gate' })))).toBe('bad_issuer');
    expect(await reason(v.verify(await hs256({ sub: 'u1', aud: 'gate' })))).toBe('bad_issuer');
    expect(await reason(v.verify(await hs256({ sub: 'u1', iss: 'https://auth', aud: 'other' })))).toBe('bad_audience');
    expect(await reason(v.verify(await hs256({ sub: 'u1', iss: 'https://auth' })))).toBe('bad_audience');
    expect(await reason(v.verify(await hs256({ iss: 'https://auth', aud: 'gate' })))).toBe('missing_sub');
    expect(await reason(v.verify(await hs256({ sub: '', iss: 'https://auth', aud: 'gate' })))).toBe('missing_sub');
  });

  test('bad signatures, garbage, alg none and an empty token are refused', async () => {
    const v = createJwtVerifier({ secret: SECRET, algorithms: ['HS256'] });
    expect(await reason(v.verify(await hs256({ sub: 'u1' }, { secret: 'another-secret-entirely-xxxxxxxxxxxx' })))).toBe('bad_signature');
    expect(await reason(v.verify('not.a.jwt'))).toBe('malformed');
    expect(await reason(v.verify('garbage'))).toBe('malformed');
    expect(await reason(v.verify(''))).toBe('missing_token');
    const none = new UnsecuredJWT({ sub: 'u1' }).setIssuedAt().setExpirationTime('1h').encode();
    expect(await reason(v.verify(none))).toBe('alg_not_allowed');
    // HS512 is not in the configured list.
    const hs512 = await new SignJWT({ sub: 'u1' }).setProtectedHeader({ alg: 'HS512' }).sign(enc(SECRET));
    expect(await reason(v.verify(hs512))).toBe('alg_not_allowed');
  });

  test('RS256 and ES256 with a PEM public key; an HS256 token "signed" with the public key is refused', async () => {
    const rsa = await generateKeyPair('RS256', { extractable: true });
    const rsaPem = await exportSPKI(rsa.publicKey);
    const ec = await generateKeyPair('ES256', { extractable: true });
    const ecPem = await exportSPKI(ec.publicKey);
    const claims: JWTPayload = { sub: 'u-rsa' };
    const rs = await new SignJWT(claims).setProtectedHeader({ alg: 'RS256' }).setExpirationTime('1h').sign(rsa.privateKey);
    const es = await new SignJWT({ sub: 'u-ec' }).setProtectedHeader({ alg: 'ES256' }).setExpirationTime('1h').sign(ec.privateKey);
    const vr = createJwtVerifier({ publicKey: rsaPem, algorithms: ['RS256', 'ES256'] });
    // The RSA key cannot verify ES256: the accepted list is narrowed to what the key can do.
    expect(vr.algorithms).toEqual(['RS256']);
    expect(await vr.verify(rs)).toMatchObject({ userId: 'u-rsa', alg: 'RS256' });
    expect(await reason(vr.verify(es))).toBe('alg_not_allowed');
    const ve = createJwtVerifier({ publicKey: ecPem, algorithms: ['RS256', 'ES256'] });
    expect(ve.algorithms).toEqual(['ES256']);
    expect(await ve.verify(es)).toMatchObject({ userId: 'u-ec', alg: 'ES256' });
    expect(await reason(ve.verify(rs))).toBe('alg_not_allowed');
    // Right algorithm, wrong key: the signature does not verify.
    const ec2 = await generateKeyPair('ES256');
    const forged = await new SignJWT({ sub: 'u-ec' }).setProtectedHeader({ alg: 'ES256' }).setExpirationTime('1h').sign(ec2.privateKey);
    expect(await reason(ve.verify(forged))).toBe('bad_signature');
    // The classic confusion attack: HS256 with the PEM text as the HMAC secret.
    const confused = await new SignJWT({ sub: 'admin' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(enc(rsaPem));
    expect(await reason(vr.verify(confused))).toBe('alg_not_allowed');
    // Even a config that lists HS256 next to a public key never verifies HMAC with it.
    const mixed = createJwtVerifier({ publicKey: rsaPem, algorithms: ['HS256', 'RS256'] });
    expect(mixed.algorithms).toEqual(['RS256']);
    expect(await reason(mixed.verify(confused))).toBe('alg_not_allowed');
  });

  test('a config that cannot verify anything throws GH_ERR_JWT_CONFIG', async () => {
    const ec = await generateKeyPair('ES256', { extractable: true });
    expect(() => createJwtVerifier({ publicKey: 'not a pem', algorithms: ['RS256'] })).toThrow(JwtConfigError);
    expect(() => createJwtVerifier({ publicKey: 'x', algorithms: ['RS256'] })).toThrow(expect.objectContaining({ code: 'GH_ERR_JWT_CONFIG' }));
    const ecPem = await exportSPKI(ec.publicKey);
    expect(() => createJwtVerifier({ publicKey: ecPem, algorithms: ['RS256'] })).toThrow(/none of the algorithms/);
    expect(() => createJwtVerifier({ secret: 's', algorithms: ['RS256'] })).toThrow(JwtConfigError);
    expect(() => createJwtVerifier({ algorithms: ['RS256'] })).toThrow(JwtConfigError);
  });

  test('a JWKS URL: keys fetched by kid; an unknown kid is no_key; an unreachable JWKS is key_unavailable', async () => {
    const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
    let url: string;
    {
      await using jwks = await jwksServer([jwk]);
      url = jwks.url;
      const v = createJwtVerifier({ jwksUrl: url, algorithms: ['RS256'] });
      const good = await new SignJWT({ sub: 'u-jwks' }).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setExpirationTime('1h').sign(privateKey);
      expect(await v.verify(good)).toMatchObject({ userId: 'u-jwks' });
      const other = await generateKeyPair('RS256');
      const unknownKid = await new SignJWT({ sub: 'u' }).setProtectedHeader({ alg: 'RS256', kid: 'k2' }).setExpirationTime('1h').sign(other.privateKey);
      expect(await reason(v.verify(unknownKid))).toBe('no_key');
      const hs = await hs256({ sub: 'u' });
      expect(await reason(v.verify(hs))).toBe('alg_not_allowed');
    }
    const dead = createJwtVerifier({ jwksUrl: url, algorithms: ['RS256'] });
    const t = await new SignJWT({ sub: 'u' }).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setExpirationTime('1h').sign(privateKey);
    expect(await reason(dead.verify(t))).toBe('key_unavailable');
  });

  test('bearerToken: the Authorization header first, then ?token=', () => {
    expect(bearerToken('Bearer abc', undefined)).toBe('abc');
    expect(bearerToken('bearer  abc ', new URLSearchParams('token=q'))).toBe('abc');
    expect(bearerToken('Basic xyz', new URLSearchParams('token=q'))).toBe('q');
    expect(bearerToken(undefined, new URLSearchParams('token='))).toBeUndefined();
    expect(bearerToken(undefined, undefined)).toBeUndefined();
  });
});


describe('JWT verifier: expiry, secrets and key sources', () => {
  test('a token without exp is refused (missing_exp) unless requireExp is false', async () => {
    const noExp = await hs256({ sub: 'u1' }, { exp: null });
    expect(await reason(createJwtVerifier({ secret: SECRET, algorithms: ['HS256'] }).verify(noExp))).toBe('missing_exp');
    expect(await reason(createJwtVerifier({ secret: SECRET, algorithms: ['HS256'], requireExp: true }).verify(noExp))).toBe('missing_exp');
    expect(await reason(createJwtVerifier({ secret: SECRET, algorithms: ['HS256'], requireExp: false }).verify(noExp))).toBe('accepted');
    // A non-numeric exp is never "no exp".
    const badExp = await new SignJWT({ sub: 'u1', exp: 'tomorrow' as unknown as number }).setProtectedHeader({ alg: 'HS256' }).sign(enc(SECRET));
    expect(await reason(createJwtVerifier({ secret: SECRET, algorithms: ['HS256'], requireExp: false }).verify(badExp))).toBe('bad_claim');
  });

  test('clockSkew sets the tolerance on exp and nbf', async () => {
    const strict = createJwtVerifier({ secret: SECRET, algorithms: ['HS256'], clockSkew: 0 });
    const loose = createJwtVerifier({ secret: SECRET, algorithms: ['HS256'], clockSkew: 120_000 });
    const expired90 = await hs256({ sub: 'u1' }, { exp: now() - 90 });
    expect(await reason(strict.verify(expired90))).toBe('expired');
    expect(await reason(loose.verify(expired90))).toBe('accepted');
    expect(await reason(strict.verify(await hs256({ sub: 'u1' }, { nbf: now() + 10 })))).toBe('not_yet_valid');
  });

  test('an HMAC secret shorter than its hash is refused: 32 bytes for HS256, 48 for HS384, 64 for HS512', () => {
    const short = (alg: 'HS256' | 'HS384' | 'HS512', bytes: number) => () => createJwtVerifier({ secret: 'x'.repeat(bytes), algorithms: [alg] });
    expect(short('HS256', 31)).toThrow(expect.objectContaining({ code: 'GH_ERR_JWT_CONFIG', message: expect.stringMatching(/too short for HS256: 31 bytes, needs at least 32/) }));
    expect(short('HS256', 32)).not.toThrow();
    expect(short('HS384', 47)).toThrow(JwtConfigError);
    expect(short('HS384', 48)).not.toThrow();
    expect(short('HS512', 63)).toThrow(JwtConfigError);
    expect(short('HS512', 64)).not.toThrow();
    // Bytes, not characters: 16 two-byte characters are 32 bytes.
    expect(() => createJwtVerifier({ secret: 'é'.repeat(16), algorithms: ['HS256'] })).not.toThrow();
  });

  test('jwksUrl over plain http to another host is refused; https and loopback http are accepted', () => {
    expect(() => createJwtVerifier({ jwksUrl: 'http://example.com/jwks', algorithms: ['RS256'] })).toThrow(expect.objectContaining({ code: 'GH_ERR_JWT_CONFIG', message: expect.stringMatching(/plain http: is only allowed to a loopback host/) }));
    expect(() => createJwtVerifier({ jwksUrl: 'http://10.0.0.1/jwks', algorithms: ['RS256'] })).toThrow(JwtConfigError);
    expect(() => createJwtVerifier({ jwksUrl: 'https://example.com/jwks', algorithms: ['RS256'] })).not.toThrow();
    expect(() => createJwtVerifier({ jwksUrl: 'http://127.0.0.1:1/jwks', algorithms: ['RS256'] })).not.toThrow();
    expect(() => createJwtVerifier({ jwksUrl: 'http://[::1]:1/jwks', algorithms: ['RS256'] })).not.toThrow();
    expect(() => createJwtVerifier({ jwksUrl: 'http://localhost:1/jwks', algorithms: ['RS256'] })).not.toThrow();
  });

  test('JWKS: a kid unknown at first is accepted after one refetch; another unknown kid within 30 s does not refetch', async () => {
    const k1 = await rsaKey('k1');
    const k2 = await rsaKey('k2');
    const k3 = await rsaKey('k3');
    await using server = await jwksServer([k1.jwk]);
    let clock = Date.now();
    const v = createJwtVerifier({ jwksUrl: server.url, algorithms: ['RS256'] }, { now: () => new Date(clock) });
    expect(server.requests).toBe(0);
    expect(await v.verify(await k1.sign({ sub: 'a' }))).toMatchObject({ userId: 'a' });
    expect(server.requests).toBe(1);
    // Cached: no fetch for a known kid.
    expect(await v.verify(await k1.sign({ sub: 'b' }))).toMatchObject({ userId: 'b' });
    expect(server.requests).toBe(1);

    // The issuer rotates k2 in: the first token with k2 triggers one refetch and is accepted.
    server.keys = [k1.jwk, k2.jwk];
    expect(await v.verify(await k2.sign({ sub: 'c' }))).toMatchObject({ userId: 'c' });
    expect(server.requests).toBe(2);

    // k3 appears too, but within 30 s of that refetch an unknown kid gets no_key, without a fetch.
    server.keys = [k1.jwk, k2.jwk, k3.jwk];
    clock += 29_000;
    expect(await reason(v.verify(await k3.sign({ sub: 'd' })))).toBe('no_key');
    expect(await reason(v.verify(await k3.sign({ sub: 'd' })))).toBe('no_key');
    expect(server.requests).toBe(2);
    // Past the cooldown the next unknown kid refetches once more.
    clock += 2_000;
    expect(await v.verify(await k3.sign({ sub: 'e' }))).toMatchObject({ userId: 'e' });
    expect(server.requests).toBe(3);

    // Concurrent unknown kids cost at most one fetch.
    const k4 = await rsaKey('k4');
    clock += 31_000;
    const tokens = await Promise.all([1, 2, 3, 4].map((i) => k4.sign({ sub: `f${i}` })));
    expect(await Promise.all(tokens.map((t) => reason(v.verify(t))))).toEqual(['no_key', 'no_key', 'no_key', 'no_key']);
    expect(server.requests).toBe(4);
  });

  test('JWKS: a key set older than 10 minutes is refetched before use; while the issuer is down the old keys keep working', async () => {
    const k1 = await rsaKey('k1');
    const server = await jwksServer([k1.jwk]);
    let clock = Date.now();
    const v = createJwtVerifier({ jwksUrl: server.url, algorithms: ['RS256'] }, { now: () => new Date(clock) });
    try {
      expect(await reason(v.verify(await k1.sign({ sub: 'a' })))).toBe('accepted');
      clock += 10 * 60_000;
      expect(await reason(v.verify(await k1.sign({ sub: 'a' })))).toBe('accepted');
      expect(server.requests).toBe(2);
    } finally {
      await server[Symbol.asyncDispose]();
    }
    clock += 10 * 60_000;
    expect(await reason(v.verify(await k1.sign({ sub: 'a' })))).toBe('accepted');
  });

  test('JWKS: an endpoint that answers an error status or no key list is key_unavailable', async () => {
    const k1 = await rsaKey('k1');
    await using server = await jwksServer('not a list' as unknown as JWK[]);
    const v = createJwtVerifier({ jwksUrl: server.url, algorithms: ['RS256'] });
    expect(await reason(v.verify(await k1.sign({ sub: 'a' })))).toBe('key_unavailable');
  });
});

describe('HTTP helpers', () => {
  test('bearerChallenge: no error code without a token; invalid_token with the reason when one was sent', () => {
    expect(bearerChallenge('missing_token')).toBe('Bearer realm="gatehouse"');
    expect(bearerChallenge('expired')).toBe('Bearer realm="gatehouse", error="invalid_token", error_description="expired"');
    expect(bearerChallenge('missing_exp', 'api')).toBe('Bearer realm="api", error="invalid_token", error_description="missing_exp"');
  });

  test('forwardClaims: incoming headers of those names are removed, then set from the claims', () => {
    const incoming = { 'x-user-id': 'mallory', 'X-Tenant': 'evil', accept: 'application/json', 'x-roles': ['a', 'b'] };
    const r = forwardClaims({ sub: 'x-user-id', tenant: 'X-Tenant', roles: 'x-roles', missing: 'x-missing' }, { sub: 'alice', tenant: 't1', roles: ['admin', 'ops'] }, incoming);
    expect(r.headers).toEqual({ accept: 'application/json', 'x-user-id': 'alice', 'x-tenant': 't1', 'x-roles': 'admin, ops' });
    expect(r.skipped).toEqual(['missing']);
    // Pure: the input is unchanged.
    expect(incoming['x-user-id']).toBe('mallory');
  });

  test('forwardClaims: a claim that is absent or cannot be a header value leaves the header unset', () => {
    const r = forwardClaims({ sub: 'x-user-id', n: 'x-n', obj: 'x-obj' }, { sub: 'alice\r\nx-admin: 1', n: 7, obj: { a: 1 } }, { 'x-user-id': 'mallory' });
    expect(r.headers).toEqual({ 'x-n': '7', 'x-obj': '{"a":1}' });
    expect(r.skipped).toEqual(['sub']);
    expect(forwardClaims({ sub: 'x-user-id' }, {}, { 'x-user-id': 'mallory' })).toEqual({ headers: {}, skipped: ['sub'] });
  });
});
