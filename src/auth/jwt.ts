/**
 * The one JWT verifier of Gatehouse: hub clients and HTTP routes (`auth.jwt`) both use it. Built
 * on `jose` from a validated {@link JwtConfig}:
 *
 * - `secret`: HMAC (HS256/384/512), the secret's UTF-8 bytes as the key, at least as long as
 *   the hash (32, 48, 64 bytes);
 * - `publicKey`: a PEM SPKI public key (RSA, RSA-PSS, EC P-256/384/521, Ed25519), imported with
 *   `importSPKI` once per algorithm it may verify;
 * - `jwksUrl`: a remote JWK Set (`https:`, or `http:` to loopback; see `jwks.ts`).
 *
 * The accepted algorithms are the config's list intersected with what the key can do: HMAC only
 * with a secret, never with a public key or a JWKS (the classic alg-confusion hole, where a token
 * is "signed" with HS256 using the public key as the secret), and never `none`. `exp` is required
 * unless `requireExp: false`; `exp` and `nbf` are checked with `clockSkew` (30 s by default),
 * `iss` and `aud` when configured; `sub` is required and is the user id.
 *
 * For HTTP, {@link bearerChallenge} gives the `WWW-Authenticate` header of a 401 and
 * {@link forwardClaims} the request headers set from the claims.
 *
 * @example
 * const verifier = createJwtVerifier({ secret: process.env.JWT_SECRET!, algorithms: ['HS256'] });
 * const { userId } = await verifier.verify(token); // throws TokenError (code GH_ERR_TOKEN)
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { errors, importSPKI, jwtVerify, type JWTPayload, type JWTVerifyGetKey, type JWTVerifyOptions } from 'jose';
import { GatehouseError } from '../errors.ts';
import type { JwtAlgorithm, JwtConfig } from '../config/types.ts';
import { remoteKeySet, type RemoteKeySetOptions } from './jwks.ts';
import { jwksUrlProblem, weakSecretProblem } from './policy.ts';

export { bearerChallenge, forwardClaims } from './http.ts';
export type { ForwardedHeaders } from './http.ts';

/** Clock skew accepted on `exp` and `nbf` when the config sets no `clockSkew`, in milliseconds. */
export const DEFAULT_CLOCK_SKEW_MS = 30_000;

/**
 * Why a token was refused. Stable: logged, shown in the 401 body, matched by tests.
 * - `missing_token`: no `Authorization: Bearer` and no `?token=`.
 * - `malformed`: not a compact JWS / JWT, or its payload is not a JSON object.
 * - `alg_not_allowed`: its `alg` is not one the key accepts (`none`, HS with a public key...).
 * - `bad_signature`: the signature does not verify.
 * - `no_key`: no key of the JWKS matches the token's `kid`/`alg`.
 * - `key_unavailable`: the JWKS could not be fetched.
 * - `missing_exp`: no `exp` while `requireExp` is on (the default): such a token never expires.
 * - `expired`, `not_yet_valid`: `exp` / `nbf` beyond the clock tolerance.
 * - `bad_issuer`, `bad_audience`: `iss` / `aud` other than configured (or missing).
 * - `missing_sub`: no `sub` (the user id), or not a non-empty string.
 * - `bad_claim`: another registered claim is invalid (`iat` in the future, a non-numeric `exp`...).
 */
export type TokenReason =
  | 'missing_token'
  | 'malformed'
  | 'alg_not_allowed'
  | 'bad_signature'
  | 'no_key'
  | 'key_unavailable'
  | 'missing_exp'
  | 'expired'
  | 'not_yet_valid'
  | 'bad_issuer'
  | 'bad_audience'
  | 'missing_sub'
  | 'bad_claim';

/** A bearer token was refused. `reason` says why (see {@link TokenReason}). */
export class TokenError extends GatehouseError {
  readonly code = 'GH_ERR_TOKEN';
  readonly reason: TokenReason;
  constructor(reason: TokenReason, message: string, options?: ErrorOptions) {
    super(`token refused (${reason}): ${message}`, options);
    this.name = 'TokenError';
    this.reason = reason;
  }

  override toJSON(): { code: string; message: string; reason: TokenReason } {
    return { code: this.code, message: this.message, reason: this.reason };
  }
}

/** A JWT configuration that cannot verify anything safely (a bad PEM, no algorithm the key can use, a short secret, a plain-http JWKS on another host). */
export class JwtConfigError extends GatehouseError {
  readonly code = 'GH_ERR_JWT_CONFIG';
  constructor(message: string, options?: ErrorOptions) {
    super(`jwt: ${message}`, options);
    this.name = 'JwtConfigError';
  }
}

/** What {@link JwtVerifier.verify} resolves with. */
export interface VerifiedToken {
  /** The token's `sub`. */
  userId: string;
  claims: JWTPayload;
  /** The `alg` it was signed with. */
  alg: string;
}

/** Verifies tokens for one `auth.jwt` config. */
export interface JwtVerifier {
  /** The algorithms this verifier accepts (config ∩ key). */
  readonly algorithms: readonly string[];
  /** Verifies a compact JWT. Rejects with {@link TokenError}, never with anything else. */
  verify(token: string): Promise<VerifiedToken>;
}

/** Options of {@link createJwtVerifier}. */
export interface JwtVerifierOptions {
  /** The current time (tests); also drives the JWKS cache. */
  now?: () => Date;
  /** JWKS fetch and cache tuning (tests). */
  jwks?: Omit<RemoteKeySetOptions, 'now'>;
}

const HMAC: ReadonlySet<string> = new Set(['HS256', 'HS384', 'HS512']);
const EC_CURVES: Record<string, string> = { ES256: 'prime256v1', ES384: 'secp384r1', ES512: 'secp521r1' };

/** The algorithms a public key can verify. */
function algorithmsOfKey(key: KeyObject): Set<string> {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return new Set(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']);
    case 'rsa-pss':
      return new Set(['PS256', 'PS384', 'PS512']);
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      return new Set(Object.keys(EC_CURVES).filter((a) => EC_CURVES[a] === curve));
    }
    case 'ed25519':
      return new Set(['EdDSA', 'Ed25519']);
    default:
      return new Set();
  }
}

/**
 * Builds a verifier for one JWT config. Throws {@link JwtConfigError} when the config cannot verify
 * anything safely: an unreadable PEM, no configured algorithm the key can use, a secret shorter
 * than its hash, or a plain-http `jwksUrl` to another host (`gatehouse check` reports these too).
 *
 * @example
 * const v = createJwtVerifier({ jwksUrl: 'https://idp.example.com/jwks', algorithms: ['RS256'], issuer: 'https://idp.example.com' });
 * const { userId, claims } = await v.verify(token);
 */
export function createJwtVerifier(cfg: JwtConfig, opts: JwtVerifierOptions = {}): JwtVerifier {
  const configured: readonly JwtAlgorithm[] = cfg.algorithms;
  let algorithms: string[];
  let key: Uint8Array | JWTVerifyGetKey;
  if (cfg.secret !== undefined) {
    algorithms = configured.filter((a) => HMAC.has(a));
    const weak = weakSecretProblem(cfg.secret, algorithms);
    if (weak) throw new JwtConfigError(`secret ${weak}`);
    key = new TextEncoder().encode(cfg.secret);
  } else if (cfg.publicKey !== undefined) {
    let ko: KeyObject;
    try {
      ko = createPublicKey(cfg.publicKey);
    } catch (err) {
      throw new JwtConfigError('publicKey is not a readable PEM public key', { cause: err });
    }
    const can = algorithmsOfKey(ko);
    algorithms = configured.filter((a) => !HMAC.has(a) && can.has(a));
    const imported = new Map<string, ReturnType<typeof importSPKI>>();
    const pem = cfg.publicKey;
    // One CryptoKey per algorithm (WebCrypto keys are bound to theirs), imported on first use.
    key = async (header) => {
      const alg = header.alg!;
      let k = imported.get(alg);
      if (!k) {
        k = importSPKI(pem, alg);
        imported.set(alg, k);
      }
      return k;
    };
  } else if (cfg.jwksUrl !== undefined) {
    algorithms = configured.filter((a) => !HMAC.has(a));
    const bad = jwksUrlProblem(cfg.jwksUrl);
    if (bad) throw new JwtConfigError(`jwksUrl: ${bad}`);
    const now = opts.now;
    key = remoteKeySet(new URL(cfg.jwksUrl), { ...opts.jwks, ...(now && { now: () => now().getTime() }) }).getKey;
  } else {
    throw new JwtConfigError('needs one of secret, publicKey or jwksUrl');
  }
  if (algorithms.length === 0) {
    const kind = cfg.secret !== undefined ? 'a secret' : cfg.publicKey !== undefined ? 'this public key' : 'a JWKS';
    throw new JwtConfigError(`none of the algorithms [${configured.join(', ')}] can be verified with ${kind}`);
  }
  const options: JWTVerifyOptions = {
    algorithms,
    clockTolerance: (cfg.clockSkew ?? DEFAULT_CLOCK_SKEW_MS) / 1000,
    requiredClaims: cfg.requireExp === false ? ['sub'] : ['sub', 'exp'],
    ...(cfg.issuer !== undefined && { issuer: cfg.issuer }),
    ...(cfg.audience !== undefined && { audience: cfg.audience }),
  };
  const now = opts.now;
  return {
    algorithms,
    async verify(token: string): Promise<VerifiedToken> {
      if (!token) throw new TokenError('missing_token', 'no token');
      let result;
      try {
        result = await jwtVerify(token, key as Uint8Array, now ? { ...options, currentDate: now() } : options);
      } catch (err) {
        throw toTokenError(err);
      }
      const sub = result.payload.sub;
      if (typeof sub !== 'string' || sub.length === 0) throw new TokenError('missing_sub', 'sub must be a non-empty string');
      return { userId: sub, claims: result.payload, alg: result.protectedHeader.alg };
    },
  };
}

/** Maps jose's errors (and anything else) to a {@link TokenError}. */
function toTokenError(err: unknown): TokenError {
  const opts = { cause: err };
  if (err instanceof errors.JWTExpired) return new TokenError('expired', 'exp is past', opts);
  if (err instanceof errors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case 'nbf':
        return new TokenError('not_yet_valid', 'nbf is in the future', opts);
      case 'iss':
        return new TokenError('bad_issuer', `iss ${err.reason === 'missing' ? 'is missing' : 'is not the configured issuer'}`, opts);
      case 'aud':
        return new TokenError('bad_audience', `aud ${err.reason === 'missing' ? 'is missing' : 'is not a configured audience'}`, opts);
      case 'sub':
        return new TokenError('missing_sub', 'sub is missing', opts);
      case 'exp':
        if (err.reason === 'missing') return new TokenError('missing_exp', 'exp is missing: tokens must expire', opts);
        return new TokenError('bad_claim', `exp: ${err.message}`, opts);
      default:
        return new TokenError('bad_claim', `${err.claim}: ${err.message}`, opts);
    }
  }
  if (err instanceof errors.JOSEAlgNotAllowed) return new TokenError('alg_not_allowed', err.message, opts);
  if (err instanceof errors.JWSSignatureVerificationFailed) return new TokenError('bad_signature', 'signature verification failed', opts);
  if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) return new TokenError('no_key', err.message, opts);
  if (err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid) return new TokenError('key_unavailable', err.message, opts);
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) {
    // An unsecured token (`alg: none`) has an empty signature part: jose calls it invalid.
    return /alg|unsecured/i.test(err.message) ? new TokenError('alg_not_allowed', err.message, opts) : new TokenError('malformed', err.message, opts);
  }
  if (err instanceof errors.JOSENotSupported) return new TokenError('alg_not_allowed', err.message, opts);
  if (err instanceof errors.JOSEError) return new TokenError('malformed', err.message, opts);
  // A failed JWKS fetch (network error) surfaces as a plain Error/TypeError from fetch.
  const msg = err instanceof Error ? err.message : String(err);
  return new TokenError('key_unavailable', msg, opts);
}

/**
 * The bearer token of a request: `Authorization: Bearer T`, else the `token` query parameter
 * (browsers cannot set headers on a WebSocket). Undefined when there is none.
 *
 * @example
 * bearerToken(req.headers.authorization, url.searchParams); // 'eyJ...' or undefined
 */
export function bearerToken(authorization: string | undefined, search: URLSearchParams | undefined): string | undefined {
  if (authorization) {
    const m = /^\s*Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (m) return m[1];
  }
  const t = search?.get('token');
  return t ? t : undefined;
}
