/**
 * `cluster.redis`: the one string that says which Redis the instances share state through.
 *
 * - `redis://[user:password@]host:port[/db]` or `rediss://...` (TLS): one Redis server, as ioredis
 *   reads the URL.
 * - `redis+sentinel://[user:password@]host:port[,host:port...]/MASTER[?db=N&sentinelUsername=U&sentinelPassword=P]`:
 *   the master that Redis Sentinel names MASTER, found through any of the listed sentinels
 *   (port 26379 when left out). `user:password` and `db` are the master's; the sentinels are
 *   asked without credentials unless `sentinelUsername` / `sentinelPassword` are given. Each part
 *   is percent-decoded (`%40` for `@` in a password).
 *
 * Parsed here for the config schema (a wrong URL is a config error with its key path) and for
 * the cluster actor's ioredis options (src/cluster/cluster.ts).
 */

/** One Redis server: the URL is given to ioredis as it is. */
export interface RedisServerTarget {
  kind: 'server';
  url: string;
}

/** A master found through Redis Sentinel. */
export interface RedisSentinelTarget {
  kind: 'sentinel';
  sentinels: { host: string; port: number }[];
  /** The master's name in the sentinels' config (`sentinel monitor NAME ...`). */
  name: string;
  username?: string;
  password?: string;
  db: number;
  sentinelUsername?: string;
  sentinelPassword?: string;
}

export type RedisTarget = RedisServerTarget | RedisSentinelTarget;

/** A `cluster.redis` value that is not a URL Gatehouse takes; the message is for the user. */
export class RedisUrlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RedisUrlError';
  }
}

/** The default port of a sentinel. */
export const SENTINEL_PORT = 26379;

const SENTINEL_SYNTAX = 'redis+sentinel://[user:password@]host:port[,host:port...]/MASTER_NAME[?db=N&sentinelPassword=...]';
const SENTINEL_PARAMS = ['db', 'sentinelUsername', 'sentinelPassword'];
const HOST = /^[A-Za-z0-9._-]+$/;

/**
 * Reads a `cluster.redis` value; throws {@link RedisUrlError} saying what is wrong (never with
 * the password in it).
 *
 * @example
 * parseRedisUrl('redis+sentinel://:pw@10.0.0.1,10.0.0.2:26380/main?db=2');
 * // { kind: 'sentinel', sentinels: [{ host: '10.0.0.1', port: 26379 }, { host: '10.0.0.2', port: 26380 }], name: 'main', password: 'pw', db: 2 }
 */
export function parseRedisUrl(url: string): RedisTarget {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'redis' || scheme === 'rediss') {
    if (!URL.canParse(url)) throw new RedisUrlError(`expected a ${scheme}://host:port URL, got one that does not parse: ${redactRedisUrl(url)}`);
    return { kind: 'server', url };
  }
  if (scheme === 'redis+sentinel') return parseSentinel(url);
  const shown = redactRedisUrl(url);
  throw new RedisUrlError(`expected a redis://, rediss:// or redis+sentinel:// URL, got a string (${JSON.stringify(shown.length > 40 ? `${shown.slice(0, 40)}…` : shown)})`);
}

function parseSentinel(url: string): RedisSentinelTarget {
  const bad = (what: string): RedisUrlError => new RedisUrlError(`${what}; expected ${SENTINEL_SYNTAX}`);
  const m = /^redis\+sentinel:\/\/(?:([^@/?#]*)@)?([^/?#]*)(?:\/([^?#]*))?(?:\?([^#]*))?$/i.exec(url);
  if (!m) throw bad(url.includes('#') ? 'a redis+sentinel URL has no #fragment' : 'not a redis+sentinel URL');
  const [, userinfo, hostList, path, query] = m;
  const out: RedisSentinelTarget = { kind: 'sentinel', sentinels: [], name: '', db: 0 };
  if (userinfo !== undefined) {
    const colon = userinfo.indexOf(':');
    const user = decode(colon < 0 ? userinfo : userinfo.slice(0, colon), 'the user name', bad);
    if (user) out.username = user;
    if (colon >= 0) {
      const pw = decode(userinfo.slice(colon + 1), 'the password', bad);
      if (pw) out.password = pw;
    }
  }
  if (!hostList) throw bad('no sentinel address');
  for (const part of hostList.split(',')) out.sentinels.push(sentinelAddress(part, bad));
  const name = decode(path ?? '', 'the master name', bad);
  if (!name) throw bad('no master name (the path)');
  if (name.includes('/')) throw bad(`the master name ${JSON.stringify(name)} has a "/"`);
  out.name = name;
  const params = new URLSearchParams(query ?? '');
  for (const [k, v] of params) {
    if (!SENTINEL_PARAMS.includes(k)) throw bad(`unknown parameter ${JSON.stringify(k)} (known: ${SENTINEL_PARAMS.join(', ')})`);
    if (k === 'db') {
      if (!/^\d{1,5}$/.test(v)) throw bad(`db must be a database number (0, 1, ...), got ${JSON.stringify(v)}`);
      out.db = Number(v);
    } else if (v) {
      if (k === 'sentinelUsername') out.sentinelUsername = v;
      else out.sentinelPassword = v;
    }
  }
  return out;
}

function sentinelAddress(part: string, bad: (what: string) => RedisUrlError): { host: string; port: number } {
  const v6 = /^\[([0-9A-Fa-f:.]+)\](?::(\d+))?$/.exec(part);
  const v4 = v6 ? undefined : /^([^:]*)(?::(\d*))?$/.exec(part);
  const host = v6?.[1] ?? v4?.[1] ?? '';
  const portText = v6 ? v6[2] : v4?.[2];
  if (!host || (!v6 && !HOST.test(host))) throw bad(`sentinel address ${JSON.stringify(part)} is not host:port`);
  const port = portText === undefined || portText === '' ? SENTINEL_PORT : Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad(`sentinel address ${JSON.stringify(part)} has no valid port (1-65535)`);
  return { host, port };
}

function decode(s: string, what: string, bad: (what: string) => RedisUrlError): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw bad(`${what} has a bad %-escape`);
  }
}

/**
 * A `cluster.redis` value without its secrets, for logs and messages: the password after `user:`
 * and a `sentinelPassword=` parameter become `***`.
 *
 * @example
 * redactRedisUrl('redis+sentinel://:pw@s1/main?sentinelPassword=x'); // 'redis+sentinel://:***@s1/main?sentinelPassword=***'
 */
export function redactRedisUrl(url: string): string {
  return url
    .replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/[^/:@\s]*:)[^@/\s]*@/, '$1***@')
    .replace(/([?&]sentinelPassword=)[^&#]*/g, '$1***');
}
