import { describe, expect, test } from 'vitest';
import { ConfigError, formatConfigIssue } from '../../src/errors.ts';
import { parseConfig } from '../../src/config/load.ts';
import { redactConfig } from '../../src/config/redact.ts';
import { parseRedisUrl, redactRedisUrl } from '../../src/config/redis-url.ts';
import { redisConnection } from '../../src/cluster/cluster.ts';

/** What `gatehouse check gh.yaml` prints for a `cluster.redis` value. */
function check(redis: string): string[] {
  try {
    parseConfig(`cluster: { redis: "${redis}" }`, 'gh.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map(formatConfigIssue);
    throw err;
  }
  return [];
}

const SYNTAX = 'expected redis+sentinel://[user:password@]host:port[,host:port...]/MASTER_NAME[?db=N&sentinelPassword=...]';

describe('cluster.redis URLs', () => {
  test('one server: redis:// and rediss:// as they are', () => {
    expect(parseRedisUrl('redis://u:p@r:6379/2')).toEqual({ kind: 'server', url: 'redis://u:p@r:6379/2' });
    expect(parseRedisUrl('rediss://r:6380')).toEqual({ kind: 'server', url: 'rediss://r:6380' });
    expect(check('redis://127.0.0.1:6379')).toEqual([]);
  });

  test('Sentinel: sentinels (default port 26379, IPv6 in brackets), master name, credentials, db and sentinel credentials', () => {
    expect(parseRedisUrl('redis+sentinel://gh:p%40ss@10.0.0.1,s2.local:26380,[::1]:26381/main?db=3&sentinelUsername=sen&sentinelPassword=spw')).toEqual({
      kind: 'sentinel',
      sentinels: [
        { host: '10.0.0.1', port: 26379 },
        { host: 's2.local', port: 26380 },
        { host: '::1', port: 26381 },
      ],
      name: 'main',
      username: 'gh',
      password: 'p@ss',
      db: 3,
      sentinelUsername: 'sen',
      sentinelPassword: 'spw',
    });
    expect(parseRedisUrl('redis+sentinel://s1/m')).toEqual({ kind: 'sentinel', sentinels: [{ host: 's1', port: 26379 }], name: 'm', db: 0 });
    expect(check('redis+sentinel://:pw@s1:26379,s2:26379/main?db=1')).toEqual([]);
  });

  test('ioredis gets sentinels and the master name for every connection (no URL)', () => {
    const base = { lazyConnect: true, enableOfflineQueue: false };
    const c = redisConnection('redis+sentinel://:pw@s1:26379/main?db=1&sentinelPassword=spw', base);
    expect(c.url).toBeUndefined();
    expect(c.options).toMatchObject({ ...base, sentinels: [{ host: 's1', port: 26379 }], name: 'main', password: 'pw', db: 1, sentinelPassword: 'spw', failoverDetector: true });
    expect(redisConnection('redis://r:6379', base)).toEqual({ url: 'redis://r:6379', options: base });
  });

  test('a wrong URL is a config error at cluster.redis saying what is wrong, without the password', () => {
    expect(check('http://x:6379')).toEqual(['gh.yaml:1:19 cluster.redis: expected a redis://, rediss:// or redis+sentinel:// URL, got a string ("http://x:6379")']);
    expect(check('redis+sentinel://s1:26379')).toEqual([`gh.yaml:1:19 cluster.redis: no master name (the path); ${SYNTAX}`]);
    expect(check('redis+sentinel:///main')).toEqual([`gh.yaml:1:19 cluster.redis: no sentinel address; ${SYNTAX}`]);
    expect(check('redis+sentinel://s1:99999/main')).toEqual([`gh.yaml:1:19 cluster.redis: sentinel address "s1:99999" has no valid port (1-65535); ${SYNTAX}`]);
    expect(check('redis+sentinel://s1,,s2/main')).toEqual([`gh.yaml:1:19 cluster.redis: sentinel address "" is not host:port; ${SYNTAX}`]);
    expect(check('redis+sentinel://s1/main?db=x')).toEqual([`gh.yaml:1:19 cluster.redis: db must be a database number (0, 1, ...), got "x"; ${SYNTAX}`]);
    expect(check('redis+sentinel://s1/main?password=x')).toEqual([`gh.yaml:1:19 cluster.redis: unknown parameter "password" (known: db, sentinelUsername, sentinelPassword); ${SYNTAX}`]);
    const leaked = check('ftp://u:hunter2@x');
    expect(leaked.join()).not.toContain('hunter2');
  });

  test('secrets are redacted in /config and in logs', () => {
    const url = 'redis+sentinel://gh:hunter2@s1,s2/main?db=1&sentinelPassword=s3cret';
    const cfg = parseConfig(`cluster: { redis: "${url}" }`, 'gh.yaml');
    expect(redactConfig(cfg).cluster?.redis).toBe('redis+sentinel://gh:[redacted]@s1,s2/main?db=1&sentinelPassword=[redacted]');
    expect(redactRedisUrl(url)).toBe('redis+sentinel://gh:***@s1,s2/main?db=1&sentinelPassword=***');
  });
});
