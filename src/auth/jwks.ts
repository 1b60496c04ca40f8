/**
 * A remote JWK Set with our own refetch policy. jose's `createRemoteJWKSet` starts its cooldown
 * at every fetch, so a key rotated in just after the first fetch would be refused for 30 s; here
 * the cooldown applies to refetches caused by an unknown `kid` only, and time comes from an
 * injected clock so tests can drive it.
 */
import { createLocalJWKSet, errors, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';

/** A fetch gives up after this long. */
export const JWKS_TIMEOUT_MS = 5_000;
/** An unknown `kid` triggers at most one refetch per this period (a flood of made-up kids costs one fetch). */
export const JWKS_COOLDOWN_MS = 30_000;
/** A key set older than this is refetched before its next use. */
export const JWKS_MAX_AGE_MS = 10 * 60_000;
/** A key set document larger than this is refused (a JWKS is a few KiB). */
export const JWKS_MAX_BYTES = 1024 * 1024;

/** Options of {@link remoteKeySet}. */
export interface RemoteKeySetOptions {
  /** Milliseconds since the epoch; `Date.now` by default. */
  now?: () => number;
  timeoutMs?: number;
  cooldownMs?: number;
  maxAgeMs?: number;
}

/** A key resolver for `jwtVerify`, plus what tests and logs may want to know. */
export interface RemoteKeySet {
  getKey: JWTVerifyGetKey;
  /** How many times the key set was fetched (successfully or not). */
  readonly fetches: number;
}

/**
 * Keys from `url`, fetched on first use, cached, refetched when older than `maxAgeMs`, and
 * refetched on a `kid` the cache does not have, at most once per `cooldownMs`. Concurrent
 * verifications share one fetch. A failed fetch rejects with jose's `JWKSTimeout`/`JWKSInvalid`
 * or the network error; the old keys stay in use until a fetch succeeds.
 *
 * @example
 * const keys = remoteKeySet(new URL('https://idp.example.com/.well-known/jwks.json'));
 * await jwtVerify(token, keys.getKey, { algorithms: ['RS256'] });
 */
export function remoteKeySet(url: URL, opts: RemoteKeySetOptions = {}): RemoteKeySet {
  const now = opts.now ?? Date.now;
  const timeoutMs = opts.timeoutMs ?? JWKS_TIMEOUT_MS;
  const cooldownMs = opts.cooldownMs ?? JWKS_COOLDOWN_MS;
  const maxAgeMs = opts.maxAgeMs ?? JWKS_MAX_AGE_MS;
  let local: JWTVerifyGetKey | undefined;
  let fetchedAt = -Infinity;
  let lastUnknownKidFetch = -Infinity;
  let inflight: Promise<void> | undefined;
  let fetches = 0;

  function refresh(): Promise<void> {
    inflight ??= (async () => {
      fetches++;
      try {
        local = createLocalJWKSet(await fetchKeySet(url, timeoutMs));
        fetchedAt = now();
      } finally {
        inflight = undefined;
      }
    })();
    return inflight;
  }

  const getKey: JWTVerifyGetKey = async (header, token) => {
    if (!local || now() - fetchedAt >= maxAgeMs) {
      try {
        await refresh();
      } catch (err) {
        // Stale keys beat no keys while the issuer is unreachable.
        if (!local) throw err;
      }
    }
    try {
      return await local!(header, token);
    } catch (err) {
      if (!(err instanceof errors.JWKSNoMatchingKey) || now() - lastUnknownKidFetch < cooldownMs) throw err;
      lastUnknownKidFetch = now();
      await refresh();
      return local!(header, token);
    }
  };
  return {
    getKey,
    get fetches() {
      return fetches;
    },
  };
}

async function fetchKeySet(url: URL, timeoutMs: number): Promise<JSONWebKeySet> {
  let text: string;
  // Not AbortSignal.timeout(): its timer would outlive every fetch by the full timeout.
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new errors.JWKSTimeout()), timeoutMs);
  try {
    const res = await fetch(url, { signal: ac.signal, redirect: 'error', headers: { accept: 'application/json' } });
    if (res.status !== 200) {
      await res.body?.cancel();
      throw new errors.JWKSInvalid(`the JWKS endpoint answered HTTP ${res.status}`);
    }
    text = await readCapped(res, JWKS_MAX_BYTES);
  } catch (err) {
    throw ac.signal.aborted ? ac.signal.reason : err;
  } finally {
    clearTimeout(timer);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new errors.JWKSInvalid('the JWKS is not JSON');
  }
  const keys = (body as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'object' && k !== null && !Array.isArray(k))) {
    throw new errors.JWKSInvalid('the JWKS has no keys list');
  }
  return body as JSONWebKeySet;
}

// Reads at most `max` bytes, so a hostile or broken endpoint cannot fill the heap.
async function readCapped(res: Response, max: number): Promise<string> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of res.body ?? []) {
    total += chunk.byteLength;
    // Breaking out of the loop cancels the stream.
    if (total > max) break;
    chunks.push(chunk);
  }
  if (total > max) throw new errors.JWKSInvalid(`the JWKS is larger than ${max} bytes`);
  return Buffer.concat(chunks).toString('utf8');
}
