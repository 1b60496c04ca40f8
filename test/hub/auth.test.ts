/**
 * Hub listeners authenticating clients at the upgrade with the shared JWT verifier
 * (src/auth/jwt.ts, tested on its own in test/auth/jwt.test.ts): what a WebSocket client sees.
 */
import { describe, expect, test } from 'vitest';
import { SignJWT, UnsecuredJWT, exportSPKI, generateKeyPair } from 'jose';
import { L } from '../../src/workers/state-table.ts';
import { MessageChannel } from 'node:worker_threads';
import pino from 'pino';
import { runShard } from '../../src/workers/shard-runtime.ts';
import { StateTable } from '../../src/workers/state-table.ts';
import { SECRET, ShardHarness, TestClient, hs256, hubListener, hubListeners, liveClients, refused, shardConfig, until } from './harness.ts';

const enc = (s: string) => new TextEncoder().encode(s);

const now = () => Math.floor(Date.now() / 1000);

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
    // RFC 6750: no error code when no token was sent; invalid_token when one was.
    expect(missing.headers['www-authenticate']).toBe('Bearer realm="gatehouse"');
    const expired = await refused(h.hubPort, await hs256({ sub: 'x' }, { exp: now() - 120 }));
    expect(expired.body).toMatchObject({ reason: 'expired' });
    expect(expired.headers['www-authenticate']).toBe('Bearer realm="gatehouse", error="invalid_token", error_description="expired"');
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

  test('a token without exp gets 401 missing_exp at the upgrade, unless the listener sets requireExp: false', async () => {
    await using h = await ShardHarness.start({
      listeners: [hubListener({ name: 'hub' }), hubListener({ name: 'hub-lax', slot: 1 }, { jwt: { secret: SECRET, algorithms: ['HS256'], requireExp: false } })],
    });
    const noExp = await hs256({ sub: 'carol' }, { exp: null });
    const r = await refused(h.hubPort, noExp);
    expect(r.status).toBe(401);
    expect(r.body).toEqual({ error: 'unauthorized', reason: 'missing_exp' });
    const lax = await TestClient.connect(h.ports.get('hub-lax')!, noExp);
    expect(lax.frames[0]).toMatchObject({ type: 'welcome', userId: 'carol' });
    await lax.close();
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
