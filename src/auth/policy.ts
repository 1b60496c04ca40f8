/**
 * The rules a JWT config must satisfy, as pure functions: `gatehouse check` reports them with
 * the config's line and column, and the verifier enforces them again for configs built in code.
 */
import { isIP } from 'node:net';

/** HMAC key length floor per algorithm, in bytes: the hash's output size (RFC 7518 section 3.2). */
export const HMAC_MIN_BYTES: Readonly<Record<string, number>> = { HS256: 32, HS384: 48, HS512: 64 };

/**
 * Whether `host` (a name or an IP literal, IPv6 with or without brackets) is this machine's
 * loopback: `localhost`, 127.0.0.0/8, `::1`, or `::ffff:127.x.y.z`.
 *
 * @example
 * isLoopbackHost('127.0.0.2'); // true
 * isLoopbackHost('0.0.0.0');   // false: every interface
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (h === 'localhost') return true;
  const v4 = /^(?:::ffff:)?(\d+\.\d+\.\d+\.\d+)$/.exec(h);
  if (v4 && isIP(v4[1]!) === 4) return v4[1]!.startsWith('127.');
  return isIP(h) === 6 && /^(?:0{0,4}:){2,7}0{0,3}1$|^::1$/.test(h);
}

/**
 * Why an HMAC secret is too weak for `algorithms`, or undefined when it is long enough for
 * every HS algorithm listed. A secret shorter than the hash gives less security than the
 * algorithm promises, and short human-chosen secrets fall to offline guessing from one token.
 *
 * @example
 * weakSecretProblem('s3cret', ['HS256']); // 'too short for HS256: 6 bytes, needs at least 32 ...'
 */
export function weakSecretProblem(secret: string, algorithms: readonly string[]): string | undefined {
  const bytes = Buffer.byteLength(secret, 'utf8');
  const strictest = algorithms.filter((a) => HMAC_MIN_BYTES[a] !== undefined).sort((a, b) => HMAC_MIN_BYTES[b]! - HMAC_MIN_BYTES[a]!)[0];
  if (strictest === undefined) return undefined;
  const need = HMAC_MIN_BYTES[strictest]!;
  if (bytes >= need) return undefined;
  return `too short for ${strictest}: ${bytes} bytes, needs at least ${need} (generate one with: openssl rand -base64 ${need})`;
}

/**
 * Why a `jwksUrl` is not acceptable, or undefined: keys must come over `https:`, or over plain
 * `http:` only from this machine, since whoever can alter the key set in transit can sign tokens.
 *
 * @example
 * jwksUrlProblem('http://idp.example.com/jwks'); // 'plain http: is only allowed to a loopback host ...'
 */
export function jwksUrlProblem(url: string): string | undefined {
  if (!URL.canParse(url)) return `expected an https:// URL, got ${JSON.stringify(url)}`;
  const u = new URL(url);
  if (u.protocol === 'https:') return undefined;
  if (u.protocol !== 'http:') return `expected an https:// URL, got ${JSON.stringify(url)}`;
  if (isLoopbackHost(u.hostname)) return undefined;
  return 'plain http: is only allowed to a loopback host (127.0.0.1, ::1, localhost): use https://, or anyone on the path could swap the keys';
}
