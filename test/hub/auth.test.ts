import http from 'node:http';
import { once } from 'node:events';
import type net from 'node:net';
import { describe, expect, test } from 'vitest';
import { SignJWT, UnsecuredJWT, exportJWK, exportSPKI, generateKeyPair, type JWTPayload } from 'jose';
import { createJwtVerifier, bearerToken, JwtConfigError, TokenError, type TokenReason } from '../../src/hub/auth.ts';
import { L } from '../../src/workers/state-table.ts';
import { MessageChannel } from 'node:worker_threads';
import pino from 'pino';
import { runShard } from '../../src/workers/shard-runtime.ts';
import { StateTable } from '../../src/workers/state-table.ts';
import { SECRET, ShardHarness, TestClient, hs256, hubListener, hubListeners, liveClients, refused, shardConfig, until } from './harness.ts';

const enc = (s: string) => new TextEncoder().encode(s);

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

const now = () => Math.floor(Date.now() / 1000);

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
    // No exp at all is a token that does not expire (as Centrifugo does).
    expect(await reason(v.verify(await hs256({ sub: 'u1' }, { exp: null })))).toBe('accepted');
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
    const sockets = new Set<net.Socket>();
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', connection: 'close' });
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    server.on('connection', (s: net.Socket) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    try {
      const v = createJwtVerifier({ jwksUrl: `http://127.0.0.1:${port}/jwks`, algorithms: ['RS256'] });
      const good = await new SignJWT({ sub: 'u-jwks' }).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setExpirationTime('1h').sign(privateKey);
      expect(await v.verify(good)).toMatchObject({ userId: 'u-jwks' });
      const other = await generateKeyPair('RS256');
      const unknownKid = await new SignJWT({ sub: 'u' }).setProtectedHeader({ alg: 'RS256', kid: 'k2' }).setExpirationTime('1h').sign(other.privateKey);
      expect(await reason(v.verify(unknownKid))).toBe('no_key');
      const hs = await hs256({ sub: 'u' });
      expect(await reason(v.verify(hs))).toBe('alg_not_allowed');
    } finally {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, 'close');
    }
    const dead = createJwtVerifier({ jwksUrl: `http://127.0.0.1:${port}/jwks`, algorithms: ['RS256'] });
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

describe('hub listener authentication', () => {
  test('a good token (header or ?token=) gets a welcome; missing or bad ones get 401 with a JSON body and no upgrade', async () => {
    await using h = await ShardHarness.start();
    const a = await TestClient.connect(h.hubPort, await hs256({ sub: 'alice' }));
    expect(a.frames[0]).toEqual({ type: 'welcome', clientId: a.clientId, userId: 'alice' });
    const b = await TestClient.connect(h.hubPort, await hs256({ sub: 'bob' }), { query: true });
    expect(b.frames[0]).toMatchObject({ type: 'welcome', userId: 'bob' });

    const missing = await refused(h.hubPort, undefined);
    expect(missing.status).toBe(401);
    expect(missing.body).toEqual({ error: 'unauthorized', reason: 'missing_token' });
    expect(missing.headers['www-authenticate']).toMatch(/^Bearer/);
    expect((await refused(h.hubPort, await hs256({ sub: 'x' }, { exp: now() - 120 }))).body).toMatchObject({ reason: 'expired' });
    expect((await refused(h.hubPort, await hs256({ sub: 'x' }, { nbf: now() + 120 }), { query: true })).body).toMatchObject({ reason: 'not_yet_valid' });
    expect((await refused(h.hubPort, new UnsecuredJWT({ sub: 'x' }).encode())).body).toMatchObject({ reason: 'alg_not_allowed' });
    expect((await refused(h.hubPort, await hs256({ name: 'no sub' }))).body).toMatchObject({ reason: 'missing_sub' });
    expect((await refused(h.hubPort, await hs256({ sub: 'x' }, { secret: 'wrong-secret-wrong-secret-wrong-secret' }))).status).toBe(401);

    // Refused handshakes never became clients: no hub-client-up for them, nothing left behind.
    expect(h.of('hub-client-up').map((m) => m.userId).sort()).toEqual(['alice', 'bob']);
    await until(() => liveClients().length === 2);
    expect(h.table.listenerGet(0, 0, L.ACTIVE)).toBe(2);
    expect(h.table.listenerGet(0, 0, L.ERROR)).toBe(6);
    await a.close();
    await b.close();
    await until(() => h.table.listenerGet(0, 0, L.ACTIVE) === 0);
    expect(h.table.listenerGet(0, 0, L.OK)).toBe(2);
    expect(h.table.listenerActiveAll(0)).toBe(0);
  });

  test('RS256 and ES256 listeners take tokens signed with their key only', async () => {
    const rsa = await generateKeyPair('RS256', { extractable: true });
    const ec = await generateKeyPair('ES256', { extractable: true });
    const rsaPem = await exportSPKI(rsa.publicKey);
    await using h = await ShardHarness.start({
      listeners: [
        hubListener({ name: 'hub' }, { jwt: { publicKey: rsaPem, algorithms: ['RS256'], issuer: 'iss1', audience: ['aud1'] } }),
        hubListener({ name: 'hub-ec', slot: 1 }, { jwt: { publicKey: await exportSPKI(ec.publicKey), algorithms: ['ES256'] } }),
      ],
    });
    const rs = await new SignJWT({ sub: 'r1', iss: 'iss1', aud: 'aud1' }).setProtectedHeader({ alg: 'RS256' }).setExpirationTime('1h').sign(rsa.privateKey);
    const es = await new SignJWT({ sub: 'e1' }).setProtectedHeader({ alg: 'ES256' }).setExpirationTime('1h').sign(ec.privateKey);
    const r = await TestClient.connect(h.hubPort, rs);
    const e = await TestClient.connect(h.ports.get('hub-ec')!, es);
    expect(r.frames[0]).toMatchObject({ userId: 'r1' });
    expect(e.frames[0]).toMatchObject({ userId: 'e1' });
    const confused = await new SignJWT({ sub: 'admin', iss: 'iss1', aud: 'aud1' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(enc(rsaPem));
    expect(await refused(h.hubPort, confused)).toMatchObject({ status: 401, body: { reason: 'alg_not_allowed' } });
    const wrongAud = await new SignJWT({ sub: 'r1', iss: 'iss1', aud: 'other' }).setProtectedHeader({ alg: 'RS256' }).setExpirationTime('1h').sign(rsa.privateKey);
    expect(await refused(h.hubPort, wrongAud)).toMatchObject({ status: 401, body: { reason: 'bad_audience' } });
    expect(await refused(h.ports.get('hub-ec')!, rs)).toMatchObject({ status: 401, body: { reason: 'alg_not_allowed' } });
    await r.close();
    await e.close();
  });
});

test('a hub listener whose JWT settings cannot verify anything fails to start, and leaves nothing behind', async () => {
  const { port1, port2 } = new MessageChannel();
  const config = shardConfig([hubListener({}, { jwt: { publicKey: 'not a pem', algorithms: ['RS256'] } })]);
  const r = await runShard({ shard: 0, config, buffers: StateTable.create().buffers, reusePort: true }, port2, { log: pino({ level: 'silent' }), inThread: true });
  port1.close();
  expect(r.ok).toBe(false);
  expect(r.message).toMatch(/publicKey is not a readable PEM/);
  expect(hubListeners()).toEqual([]);
});
