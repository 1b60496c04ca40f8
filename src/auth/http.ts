/**
 * The HTTP side of JWT auth, as pure functions for a listener to call: the 401 challenge
 * (RFC 6750 section 3) and request headers set from verified claims (`forwardClaims`).
 */
import type { JWTPayload } from 'jose';
import type { TokenReason } from './jwt.ts';

/**
 * The `WWW-Authenticate` value of a 401 for a request refused by the JWT verifier. Without a
 * token the challenge carries no error code (RFC 6750 section 3.1: the client just did not know
 * auth was needed); with one it says `error="invalid_token"` and the reason as its description.
 *
 * @example
 * res.writeHead(401, { 'www-authenticate': bearerChallenge(err.reason) });
 * // Bearer realm="gatehouse", error="invalid_token", error_description="expired"
 */
export function bearerChallenge(reason: TokenReason, realm = 'gatehouse'): string {
  const r = `Bearer realm="${realm.replace(/["\\]/g, '')}"`;
  return reason === 'missing_token' ? r : `${r}, error="invalid_token", error_description="${reason}"`;
}

/** Request headers as Node gives them (lower-case names). */
export type ForwardedHeaders = Record<string, string | string[] | undefined>;

// A value Node would refuse in a header (CR, LF, NUL, other controls, or beyond Latin-1).
const UNSAFE_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

function claimValue(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v.join(', ');
  return v === undefined || v === null ? undefined : JSON.stringify(v);
}

/**
 * The request headers to send upstream once a token verified: every header named in `forward`
 * (claim -> header) is removed from `headers` first, so a client can never supply it itself,
 * then set from the claim when the token has it. A claim that is absent, or whose value cannot be
 * a header value (a newline, a control character), leaves the header unset and is listed in
 * `skipped`. String lists are joined with `, `, other non-strings are JSON. Pure: `headers` is
 * not changed.
 *
 * @example
 * forwardClaims({ sub: 'x-user-id' }, { sub: 'alice' }, { 'x-user-id': 'mallory', accept: '*' });
 * // { headers: { accept: '*', 'x-user-id': 'alice' }, skipped: [] }
 */
export function forwardClaims(
  forward: Readonly<Record<string, string>>,
  claims: JWTPayload,
  headers: Readonly<ForwardedHeaders>,
): { headers: ForwardedHeaders; skipped: string[] } {
  const names = new Set(Object.values(forward).map((h) => h.toLowerCase()));
  const out: ForwardedHeaders = {};
  for (const [k, v] of Object.entries(headers)) if (!names.has(k.toLowerCase())) out[k] = v;
  const skipped: string[] = [];
  for (const [claim, header] of Object.entries(forward)) {
    const v = Object.hasOwn(claims, claim) ? claimValue(claims[claim]) : undefined;
    if (v === undefined || UNSAFE_VALUE.test(v)) skipped.push(claim);
    else out[header.toLowerCase()] = v;
  }
  return { headers: out, skipped };
}

/**
 * {@link forwardClaims} for a flat `[name, value, ...]` header list (the HTTP listener's form),
 * in place: every field named in `forward` is removed from `out`, then set from its claim.
 * Returns the claims that were absent or unsafe (left unset).
 *
 * @example
 * const out = ['x-user-id', 'mallory', 'accept', '*'];
 * forwardClaimsInto({ sub: 'x-user-id' }, { sub: 'alice' }, out); // out: ['accept', '*', 'x-user-id', 'alice']
 */
export function forwardClaimsInto(forward: Readonly<Record<string, string>>, claims: JWTPayload, out: string[]): string[] {
  const names = Object.values(forward).map((h) => h.toLowerCase());
  let w = 0;
  for (let i = 0; i < out.length; i += 2) {
    if (names.includes(out[i]!)) continue;
    out[w++] = out[i]!;
    out[w++] = out[i + 1]!;
  }
  out.length = w;
  const skipped: string[] = [];
  for (const [claim, header] of Object.entries(forward)) {
    const v = Object.hasOwn(claims, claim) ? claimValue(claims[claim]) : undefined;
    if (v === undefined || UNSAFE_VALUE.test(v)) skipped.push(claim);
    else out.push(header.toLowerCase(), v);
  }
  return skipped;
}
