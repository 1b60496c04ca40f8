/**
 * The TLS and PROXY protocol parts of the config schema: listener `tls` and `proxyProtocol`,
 * upstream `tls` and `sendProxyProtocol`. File paths are kept as written here; `parseConfig`
 * resolves them against the config file's directory, and `gatehouse check` reads them.
 */
import path from 'node:path';
import { z } from 'zod';
import { cidr, positiveDuration } from './schema-common.ts';
import type { ListenerTlsConfig, UpstreamTlsConfig } from './types.ts';
import { TlsFileError, checkCaFile, loadPair } from '../tls/certificates.ts';

/** A file path: a non-empty string (relative paths are relative to the config file). */
const file = () => z.string({ error: 'expected a file path' }).min(1, 'expected a file path');

/** A server name for SNI: a DNS name, or `*.` and a DNS suffix (one label), lower-cased. */
const serverName = () =>
  z
    .string()
    .min(1)
    .transform((s) => s.toLowerCase().replace(/\.$/, ''))
    .refine((s) => /^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/.test(s), {
      message: 'expected a DNS name or *.suffix (a wildcard covers exactly one label)',
    });

const tlsVersion = z.enum(['TLSv1.2', 'TLSv1.3']);

/**
 * Listener `tls`: the certificates (the first is the default when no `serverNames` match the
 * client's SNI), the lowest protocol version, ALPN protocols and client certificates.
 */
export const listenerTls = z.strictObject({
  certificates: z
    .array(
      z.strictObject({
        cert: file(),
        key: file(),
        /** Empty: the certificate's own DNS names (subjectAltName). */
        serverNames: z.array(serverName()).default([]),
      }),
    )
    .min(1, 'at least one certificate'),
  minVersion: tlsVersion.default('TLSv1.2'),
  /** Empty: `http/1.1` on http and hub listeners, none on tcp listeners. */
  alpn: z.array(z.string().min(1).max(255)).default([]),
  clientAuth: z.strictObject({ ca: file(), required: z.boolean().default(true) }).optional(),
  /** A client that has not finished its handshake within it is closed. */
  handshakeTimeout: positiveDuration().default(10_000),
});

/** Listener `proxyProtocol`: which versions are accepted, and from which peers (required from them). */
export const proxyProtocol = z.strictObject({
  accept: z.enum(['v1', 'v2', 'any']).default('any'),
  trustedProxies: z.array(cidr()).min(1, 'at least one CIDR: the load balancers allowed to send the header'),
});

/** Upstream `tls`: TLS origination to the backends. */
export const upstreamTls = z.strictObject({
  /** SNI and the name verified; default: the backend's host. */
  serverName: z.string().min(1).optional(),
  /** CAs to verify backends against; default: Node's bundled roots. */
  ca: file().optional(),
  /** A client certificate for mutual TLS with the backends. */
  cert: file().optional(),
  key: file().optional(),
  verify: z.boolean().default(true),
  minVersion: tlsVersion.default('TLSv1.2'),
}).refine((t) => (t.cert === undefined) === (t.key === undefined), { message: 'cert and key go together (a client certificate needs its key)' });

export const sendProxyProtocol = z.enum(['v1', 'v2']);

/** Resolves a config file path: absolute as is, relative against the config file's directory. */
function resolvePath(p: string, baseDir: string): string {
  return path.isAbsolute(p) ? p : path.resolve(baseDir, p);
}

/** Makes every TLS file path of a parsed config absolute (`parseConfig` calls it). */
export function resolveTlsFiles(cfg: { listeners: { tls?: ListenerTlsConfig }[]; upstreams: { tls?: UpstreamTlsConfig }[] }, baseDir: string): void {
  for (const l of cfg.listeners) {
    const t = l.tls;
    if (t === undefined) continue;
    for (const c of t.certificates) {
      c.cert = resolvePath(c.cert, baseDir);
      c.key = resolvePath(c.key, baseDir);
    }
    if (t.clientAuth) t.clientAuth.ca = resolvePath(t.clientAuth.ca, baseDir);
  }
  for (const u of cfg.upstreams) {
    const t = u.tls;
    if (t === undefined) continue;
    if (t.ca !== undefined) t.ca = resolvePath(t.ca, baseDir);
    if (t.cert !== undefined) t.cert = resolvePath(t.cert, baseDir);
    if (t.key !== undefined) t.key = resolvePath(t.key, baseDir);
  }
}

/**
 * Reads every listener's certificate pairs and CA files (after {@link resolveTlsFiles}): a
 * missing, unreadable or unparsable file, or a key that does not match its certificate, is a
 * problem at the key path of the file that is at fault (`listeners.0.tls.certificates.1.key`).
 */
export function tlsFileProblems(cfg: { listeners: { tls?: ListenerTlsConfig }[]; upstreams: { tls?: UpstreamTlsConfig }[] }): { path: (string | number)[]; message: string; at: 'value' }[] {
  const out: { path: (string | number)[]; message: string; at: 'value' }[] = [];
  cfg.upstreams.forEach((u, i) => {
    const t = u.tls;
    if (t === undefined) return;
    const problem = (f: () => unknown, key: (e: TlsFileError) => string) => {
      try {
        f();
      } catch (err) {
        if (!(err instanceof TlsFileError)) throw err;
        out.push({ path: ['upstreams', i, 'tls', key(err)], message: err.message, at: 'value' });
      }
    };
    if (t.ca !== undefined) problem(() => checkCaFile(t.ca!), () => 'ca');
    if (t.cert !== undefined && t.key !== undefined) problem(() => loadPair(t.cert!, t.key!), (e) => (e.which === 'key' ? 'key' : 'cert'));
  });
  cfg.listeners.forEach((l, i) => {
    const t = l.tls;
    if (t === undefined) return;
    t.certificates.forEach((c, j) => {
      try {
        loadPair(c.cert, c.key);
      } catch (err) {
        if (!(err instanceof TlsFileError)) throw err;
        out.push({ path: ['listeners', i, 'tls', 'certificates', j, err.which === 'key' ? 'key' : 'cert'], message: err.message, at: 'value' });
      }
    });
    if (t.clientAuth) {
      try {
        checkCaFile(t.clientAuth.ca);
      } catch (err) {
        if (!(err instanceof TlsFileError)) throw err;
        out.push({ path: ['listeners', i, 'tls', 'clientAuth', 'ca'], message: err.message, at: 'value' });
      }
    }
  });
  return out;
}
