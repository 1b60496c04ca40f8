/** Secrets out of a config, for `GET /config`, logs and error reports. */

export const REDACTED = '[redacted]';

// Any key whose name ends in secret, token or password (`token`, `clientSecret`, `dbPassword`).
const SECRET_KEY = /(secret|token|password|passwd)$/i;
// scheme://user:PASSWORD@host: keep the user, hide the password.
const URL_PASSWORD = /^([a-z][a-z0-9+.-]*:\/\/[^/:@\s]*:)[^@/\s]*@/i;

/**
 * A deep copy of `value` with secrets replaced by `"[redacted]"`: the value of every key named
 * like a secret (`secret`, `token`, `password`, `...Secret`, `...Token`, `...Password`, so the JWT
 * secret, the admin token and such keys in custom actor options), and the password of every
 * URL with credentials (`redis://user:pass@host`). The JWT `publicKey` is not a secret.
 *
 * @example
 * redactConfig(cfg).admin.token;   // '[redacted]'
 * redactConfig(cfg).cluster?.redis; // 'redis://:[redacted]@127.0.0.1:6379'
 */
export function redactConfig<T>(value: T): T {
  return redact(value, undefined) as T;
}

function redact(v: unknown, key: string | undefined): unknown {
  if (key !== undefined && SECRET_KEY.test(key) && v !== undefined && v !== null) return REDACTED;
  if (typeof v === 'string') return v.replace(URL_PASSWORD, `$1${REDACTED}@`);
  if (Array.isArray(v)) return v.map((x) => redact(x, undefined));
  if (typeof v === 'object' && v !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = redact(x, k);
    return out;
  }
  return v;
}
