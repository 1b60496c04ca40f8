import { SignJWT } from 'jose';
import { loadConfigOrReport } from './load-config.ts';
import { parseDuration } from '../config/units.ts';

/**
 * `gatehouse token --config FILE --sub USER [--listener NAME] [--ttl 1h]`: prints a JWT that the
 * config's hub listener accepts, signed with its `auth.jwt.secret` (HS* only: a listener that
 * verifies with a public key or JWKS needs its issuer's private key, which Gatehouse never has).
 * It carries the listener's `issuer` and first `audience` when set, and always an `exp`, `--ttl`
 * from now (1h by default). A config whose secret is too short for its algorithm is refused like
 * any invalid config (`FILE:LINE:COL key.path: message`, exit 1). For trying the hub by hand.
 *
 * @example
 * gatehouse token --config examples/quickstart.yaml --sub alice
 */
export async function mintToken(v: Record<string, unknown>): Promise<number> {
  const file = v.config as string | undefined;
  const sub = v.sub as string | undefined;
  if (!file || !sub) {
    process.stderr.write('gatehouse token: --config FILE and --sub USER are required\n');
    return 2;
  }
  const cfg = await loadConfigOrReport(file);
  if (!cfg) return 1;
  const hubs = cfg.listeners.filter((l) => l.protocol === 'hub');
  const name = v.listener as string | undefined;
  const l = name ? hubs.find((x) => x.name === name) : hubs[0];
  if (!l || l.protocol !== 'hub') {
    process.stderr.write(`gatehouse token: ${name ? `no hub listener named ${name}` : 'the config has no hub listener'} in ${file}\n`);
    return 1;
  }
  if (!l.auth) {
    process.stderr.write(`gatehouse token: listener ${l.name} takes no tokens: its clients are identified by their TLS client certificates\n`);
    return 1;
  }
  const jwt = l.auth.jwt;
  const alg = jwt.algorithms.find((a) => a.startsWith('HS'));
  if (jwt.secret === undefined || !alg) {
    process.stderr.write(`gatehouse token: listener ${l.name} verifies tokens with ${jwt.publicKey ? 'a public key' : 'a JWKS'}: sign them with your issuer's private key\n`);
    return 1;
  }
  let ttlMs: number;
  try {
    ttlMs = parseDuration((v.ttl as string | undefined) ?? '1h');
  } catch (err) {
    process.stderr.write(`gatehouse token: --ttl: ${(err as Error).message}\n`);
    return 2;
  }
  // Every token gets an exp: listeners refuse tokens without one unless requireExp is false.
  if (ttlMs < 1_000) {
    process.stderr.write('gatehouse token: --ttl: must be at least 1s\n');
    return 2;
  }
  let t = new SignJWT({}).setProtectedHeader({ alg, typ: 'JWT' }).setSubject(sub).setIssuedAt().setExpirationTime(Math.floor((Date.now() + ttlMs) / 1000));
  if (jwt.issuer) t = t.setIssuer(jwt.issuer);
  if (jwt.audience?.[0]) t = t.setAudience(jwt.audience[0]);
  process.stdout.write(`${await t.sign(new TextEncoder().encode(jwt.secret))}\n`);
  return 0;
}
