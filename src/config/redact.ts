/** Secrets out of a config, for `GET /config`, logs and error reports. */
import { secretPaths } from './secrets.ts';
import type { KeyPath } from './secrets.ts';

export const REDACTED = '[redacted]';

// Any key whose name ends in secret, token or password (`token`, `clientSecret`, `dbPassword`).
const SECRET_KEY = /(secret|token|password|passwd)$/i;
// scheme://user:PASSWORD@host: keep the user, hide the password.
const URL_PASSWORD = /^([a-z][a-z0-9+.-]*:\/\/[^/:@\s]*:)[^@/\s]*@/i;
// A URL query parameter named like a secret (`redis+sentinel://...?sentinelPassword=...`).
const URL_SECRET_PARAM = /([?&][a-z0-9_]*(?:secret|token|password|passwd)=)[^&#\s]*/gi;
const URL_START = /^[a-z][a-z0-9+.-]*:\/\//i;

/**
 * A deep copy of `value` with secrets replaced by `"[redacted]"`: the value of every key named
 * like a secret (`secret`, `token`, `password`, `...Secret`, `...Token`, `...Password`, so the JWT
 * secret, the admin token and such keys in custom actor options), the password of every
 * URL with credentials (`redis://user:pass@host`) and of a URL's secret-named query parameters
 * (`?sentinelPassword=...`), and, on a config from `parseConfig`, every
 * value written with `${env:...}` or `${file:...}` (the whole value, even when the reference was
 * only part of it). The JWT `publicKey` is not a secret.
 *
 * @example
 * redactConfig(cfg).admin.token;   // '[redacted]'
 * redactConfig(cfg).cluster?.redis; // 'redis://:[redacted]@127.0.0.1:6379'
 */
export function redactConfig<T>(value: T): T {
  const fromRefs = new Set(secretPaths(value).map(pathKey));
  return redact(value, undefined, [], fromRefs) as T;
}

function redact(v: unknown, key: string | undefined, at: KeyPath, fromRefs: Set<string>): unknown {
  if (v === undefined || v === null) return v;
  if (key !== undefined && SECRET_KEY.test(key)) return REDACTED;
  if (fromRefs.size > 0 && fromRefs.has(pathKey(at))) return REDACTED;
  if (typeof v === 'string') return redactParams(v.replace(URL_PASSWORD, `$1${REDACTED}@`));
  if (Array.isArray(v)) return v.map((x, i) => redact(x, undefined, [...at, i], fromRefs));
  if (typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = redact(x, k, [...at, k], fromRefs);
    return out;
  }
  return v;
}

/** A URL's secret-named query parameters, redacted (other strings are left as they are). */
function redactParams(s: string): string {
  return URL_START.test(s) && s.includes('?') ? s.replace(URL_SECRET_PARAM, `$1${REDACTED}`) : s;
}

function pathKey(p: KeyPath): string {
  return JSON.stringify(p);
}
