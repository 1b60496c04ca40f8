/**
 * `gatehouse token` from the CLI: every token it mints carries `exp` (`--ttl`, 1h by default) and
 * passes the listener's own verifier; a config whose secret is too short is refused like any
 * invalid config.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { decodeJwt } from 'jose';
import { createJwtVerifier } from '../../src/auth/jwt.ts';
import { parseConfig } from '../../src/config/load.ts';
import type { HubListenerConfig } from '../../src/config/types.ts';
import { ROOT, runCli, tempDir } from '../helpers/daemon.ts';

const QUICKSTART = path.join(ROOT, 'examples/quickstart.yaml');

describe('gatehouse token', () => {
  test('mints a token with exp one hour out by default, or --ttl; the quickstart hub accepts it', async () => {
    const cfg = parseConfig(readFileSync(QUICKSTART, 'utf8'), QUICKSTART);
    const hub = cfg.listeners.find((l): l is HubListenerConfig => l.protocol === 'hub')!;
    const verifier = createJwtVerifier(hub.auth!.jwt);

    const def = await runCli(['token', '--config', QUICKSTART, '--sub', 'alice']);
    expect(def).toMatchObject({ code: 0, stderr: '' });
    const claims = decodeJwt(def.stdout.trim());
    expect(claims.sub).toBe('alice');
    expect(claims.exp! - claims.iat!).toBe(3_600);
    expect(await verifier.verify(def.stdout.trim())).toMatchObject({ userId: 'alice' });

    const short = await runCli(['token', '--config', QUICKSTART, '--sub', 'bob', '--ttl', '10m']);
    expect(short.code).toBe(0);
    const c2 = decodeJwt(short.stdout.trim());
    expect(c2.exp! - c2.iat!).toBe(600);
  });

  test('refuses a ttl under a second, and a config whose secret is too short', async () => {
    expect(await runCli(['token', '--config', QUICKSTART, '--sub', 'alice', '--ttl', '0'])).toMatchObject({ code: 2, stderr: 'gatehouse token: --ttl: must be at least 1s\n' });
    using dir = tempDir();
    const file = dir.write('weak.yaml', [
      'listeners:',
      '  - name: hub',
      '    protocol: hub',
      '    listen: 127.0.0.1:0',
      '    auth: { jwt: { secret: only-twenty-two-bytes } }',
      '    nodes: [ { id: n1, url: "ws://127.0.0.1:7001/" } ]',
      '',
    ].join('\n'));
    const r = await runCli(['token', '--config', file, '--sub', 'alice']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`${file}:5:28 listeners.0.auth.jwt.secret: too short for HS256: 21 bytes, needs at least 32 (generate one with: openssl rand -base64 32)\n`);
  });
});
