import { randomUUID } from 'node:crypto';
import { isIP } from 'node:net';
import { parseDuration, UnitError } from '../config/units.ts';
import { GatehouseError } from '../errors.ts';

/**
 * One registered service instance, as the admin API shows it (`GET /v1/services`).
 * `ttl` is in milliseconds (0: never expires); `expiresAt` is an ISO time, or null when it
 * never expires.
 */
export interface ServiceInstance {
  id: string;
  name: string;
  /** `host:port` as registered; `host` and `port` are its parts. */
  address: string;
  host: string;
  port: number;
  tags: string[];
  metadata: Record<string, string>;
  ttl: number;
  expiresAt: string | null;
}

/** What a registration carries, validated (the instance without its expiry). */
export type Registration = Omit<ServiceInstance, 'expiresAt'>;

/** Bounds of a registration: the registry is fed by the network and must stay small. */
export const REGISTRATION_LIMITS = {
  nameLength: 128,
  idLength: 128,
  tags: 32,
  tagLength: 128,
  metadataKeys: 32,
  metadataValueLength: 512,
  /** 1 s .. 24 h; 0 means no expiry. */
  minTtlMs: 1_000,
  maxTtlMs: 24 * 3_600_000,
} as const;

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const ID = /^[A-Za-z0-9][A-Za-z0-9._:@-]*$/;
const HOST = /^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/;

/** A registration that does not validate: every problem, each with the field it is about. */
export class RegistrationError extends GatehouseError {
  readonly code = 'GH_ERR_REGISTRATION_INVALID';
  readonly problems: { field: string; message: string }[];
  constructor(problems: { field: string; message: string }[]) {
    super(problems.map((p) => `${p.field}: ${p.message}`).join('; '));
    this.name = 'RegistrationError';
    this.problems = problems;
  }
}

/** Splits `host:port` (`[v6]:port` for IPv6) or returns a message saying what is wrong. */
export function parseServiceAddress(s: string): { host: string; port: number } | string {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:[\]]+):(\d{1,5})$/.exec(s);
  if (!m) return 'must be host:port (IPv6 as [addr]:port)';
  const host = m[1]!;
  const port = Number(m[2]);
  if (!(port >= 1 && port <= 65535)) return 'port must be 1..65535';
  if (s.startsWith('[') ? isIP(host) !== 6 : isIP(host) === 0 && !HOST.test(host)) return 'host must be an IP address or a DNS name';
  return { host, port };
}

/**
 * Validates a registration body (`POST /v1/services`): `{ name, address, tags?, metadata?,
 * ttl?: "10s" | ms, id? }`. An absent id is generated. Throws a {@link RegistrationError} listing
 * every problem.
 *
 * @example
 * parseRegistration({ name: 'app', address: '127.0.0.1:9001', ttl: '10s' }).ttl; // 10000
 */
export function parseRegistration(body: unknown): Registration {
  const problems: { field: string; message: string }[] = [];
  const bad = (field: string, message: string): void => void problems.push({ field, message });
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new RegistrationError([{ field: '(body)', message: 'must be a JSON object' }]);
  const b = body as Record<string, unknown>;
  const L = REGISTRATION_LIMITS;
  for (const k of Object.keys(b)) if (!['id', 'name', 'address', 'tags', 'metadata', 'ttl'].includes(k)) bad(k, 'unknown field');

  const name = b.name;
  if (typeof name !== 'string' || name.length === 0) bad('name', 'required: a non-empty string');
  else if (name.length > L.nameLength || !NAME.test(name)) bad('name', `letters, digits, '.', '_' and '-', at most ${L.nameLength} characters`);

  let id = b.id;
  if (id === undefined) id = `${typeof name === 'string' ? name : 'service'}-${randomUUID()}`;
  else if (typeof id !== 'string' || id.length === 0 || id.length > L.idLength || !ID.test(id)) bad('id', `letters, digits, '.', '_', ':', '@' and '-', at most ${L.idLength} characters`);

  let hp: { host: string; port: number } | undefined;
  if (typeof b.address !== 'string') bad('address', 'required: host:port');
  else {
    const r = parseServiceAddress(b.address);
    if (typeof r === 'string') bad('address', r);
    else hp = r;
  }

  const tags: string[] = [];
  if (b.tags !== undefined) {
    if (!Array.isArray(b.tags) || b.tags.length > L.tags) bad('tags', `an array of at most ${L.tags} strings`);
    else
      for (const [i, t] of b.tags.entries()) {
        if (typeof t !== 'string' || t.length === 0 || t.length > L.tagLength) bad(`tags[${i}]`, `a non-empty string of at most ${L.tagLength} characters`);
        else if (!tags.includes(t)) tags.push(t);
      }
  }

  const metadata: Record<string, string> = {};
  if (b.metadata !== undefined) {
    if (b.metadata === null || typeof b.metadata !== 'object' || Array.isArray(b.metadata)) bad('metadata', 'an object of string values');
    else {
      const entries = Object.entries(b.metadata as Record<string, unknown>);
      if (entries.length > L.metadataKeys) bad('metadata', `at most ${L.metadataKeys} keys`);
      for (const [k, v] of entries) {
        if (typeof v !== 'string' || v.length > L.metadataValueLength) bad(`metadata.${k}`, `a string of at most ${L.metadataValueLength} characters`);
        else if (k.length === 0 || k.length > L.nameLength) bad('metadata', `keys of 1..${L.nameLength} characters`);
        else metadata[k] = v;
      }
    }
  }

  let ttl = 0;
  if (b.ttl !== undefined) {
    try {
      if (typeof b.ttl !== 'string' && typeof b.ttl !== 'number') throw new UnitError('a duration like "10s" or milliseconds');
      ttl = parseDuration(b.ttl);
      if (ttl !== 0 && (ttl < L.minTtlMs || ttl > L.maxTtlMs)) bad('ttl', 'between 1s and 24h, or 0 for no expiry');
    } catch (err) {
      bad('ttl', err instanceof UnitError ? err.message : 'a duration like "10s" or milliseconds');
    }
  }

  if (problems.length > 0) throw new RegistrationError(problems);
  return { id: id as string, name: name as string, address: b.address as string, host: hp!.host, port: hp!.port, tags, metadata, ttl };
}
