import type { Redis } from 'ioredis';

/**
 * The Lua scripts of the shared service registry: each change is atomic, bumps the version and
 * publishes itself on the changes channel in the same step, so that every instance sees every
 * change once and in order.
 *
 * Keys (under `keyPrefix`): `services` (hash: id → entry), `services:expiry` (sorted set: id by
 * expiry, epoch ms, only entries with a ttl), `services:version` (counter), `services:changes`
 * (channel), `services:gone` (hash: id → time of its deregistration, so that an older
 * registration pushed after a Redis outage does not bring it back; the hash lives an hour after
 * its last write). An entry is `{"e":EXPIRES_AT,"s":STAMP,"t":TTL,"r":REGISTRATION}`: the prefix is
 * fixed so that the scripts read and rewrite it without re-encoding the registration. Times are
 * Redis's (`TIME`) for changes made while Redis is up, so one clock decides expiry.
 *
 * A message is `{"v":VERSION,"type":TYPE,"id":ID,"entry":ENTRY}` with TYPE one of `registered`,
 * `updated`, `heartbeat`, `deregistered`, `expired`.
 */
const COMMON = `
local function now() local t = redis.call('TIME') return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end
local function n(x) return string.format('%.0f', x) end
local function parse(entry)
  local e, s, t, r = string.match(entry, '^{"e":(%d+),"s":(%d+),"t":(%d+),"r":(.*)}$')
  return tonumber(e), tonumber(s), tonumber(t), r
end
local function entry(e, s, t, r) return '{"e":' .. n(e) .. ',"s":' .. n(s) .. ',"t":' .. n(t) .. ',"r":' .. r .. '}' end
local function put(id, value, e)
  redis.call('HSET', KEYS[1], id, value)
  if e > 0 then redis.call('ZADD', KEYS[2], e, id) else redis.call('ZREM', KEYS[2], id) end
end
local function tombstone(id, t)
  redis.call('HSET', KEYS[5], id, n(t))
  redis.call('PEXPIRE', KEYS[5], 3600000)
end
local function publish(type, id, value)
  local v = redis.call('INCR', KEYS[3])
  redis.call('PUBLISH', KEYS[4], '{"v":' .. v .. ',"type":"' .. type .. '","id":' .. cjson.encode(id) .. ',"entry":' .. value .. '}')
  return v
end
`;

/** ARGV: id, registration JSON, ttl, max instances. → [created 1/0 (-1: full), version]. */
const REGISTER = `${COMMON}
local id, ttl = ARGV[1], tonumber(ARGV[3])
local exists = redis.call('HEXISTS', KEYS[1], id) == 1
if not exists and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return {-1, 0} end
local t = now()
local e = 0
if ttl > 0 then e = t + ttl end
local value = entry(e, t, ttl, ARGV[2])
put(id, value, e)
redis.call('HDEL', KEYS[5], id)
local v = publish(exists and 'updated' or 'registered', id, value)
return {exists and 0 or 1, v}`;

/** ARGV: id. → [found 1/0, version]. */
const HEARTBEAT = `${COMMON}
local id = ARGV[1]
local cur = redis.call('HGET', KEYS[1], id)
if not cur then return {0, 0} end
local e, s, t, r = parse(cur)
if t > 0 then e = now() + t end
local value = entry(e, s, t, r)
put(id, value, e)
return {1, publish('heartbeat', id, value)}`;

/** ARGV: id. → [found 1/0, version]. */
const DEREGISTER = `${COMMON}
local id = ARGV[1]
local cur = redis.call('HGET', KEYS[1], id)
if not cur then return {0, 0} end
redis.call('HDEL', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
tombstone(id, now())
return {1, publish('deregistered', id, cur)}`;

/** ARGV: most entries to expire. → how many expired (each published as `expired`). */
const EXPIRE = `${COMMON}
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now(), 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  local cur = redis.call('HGET', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  if cur then
    redis.call('HDEL', KEYS[1], id)
    publish('expired', id, cur)
  end
end
return #ids`;

/**
 * A change made while Redis was away, merged by stamp (the later registration wins).
 * ARGV: kind (`put` | `heartbeat` | `delete`), id, registration JSON, ttl, stamp, expiresAt.
 * → version of the published change, 0 when Redis's entry won.
 */
const MERGE = `${COMMON}
local kind, id = ARGV[1], ARGV[2]
local stamp, x = tonumber(ARGV[5]), tonumber(ARGV[6])
local cur = redis.call('HGET', KEYS[1], id)
local e, s, t, r
if cur then e, s, t, r = parse(cur) end
if kind == 'put' then
  if cur and s > stamp then return 0 end
  local gone = tonumber(redis.call('HGET', KEYS[5], id))
  if gone and gone >= stamp then return 0 end
  local value = entry(x, stamp, tonumber(ARGV[4]), ARGV[3])
  put(id, value, x)
  return publish(cur and 'updated' or 'registered', id, value)
elseif kind == 'heartbeat' then
  if not cur or t == 0 or e >= x then return 0 end
  local value = entry(x, s, t, r)
  put(id, value, x)
  return publish('heartbeat', id, value)
else
  local gone = tonumber(redis.call('HGET', KEYS[5], id))
  if not gone or gone < stamp then tombstone(id, stamp) end
  if not cur or s > stamp then return 0 end
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  return publish('deregistered', id, cur)
end`;

/** The scripts as commands of the connection (EVALSHA, loaded on first use). */
export interface RegistryCommands {
  ghRegPut(keys: string[], ...args: (string | number)[]): Promise<[number, number]>;
  ghRegHeartbeat(keys: string[], ...args: (string | number)[]): Promise<[number, number]>;
  ghRegDelete(keys: string[], ...args: (string | number)[]): Promise<[number, number]>;
  ghRegExpire(keys: string[], ...args: (string | number)[]): Promise<number>;
  ghRegMerge(keys: string[], ...args: (string | number)[]): Promise<number>;
}

type Raw = Record<keyof RegistryCommands, (...args: (string | number)[]) => Promise<never>>;

/** Defines the registry's scripts on `redis` (once per connection) and returns them typed. */
export function registryCommands(redis: Redis): RegistryCommands {
  const scripts = { ghRegPut: REGISTER, ghRegHeartbeat: HEARTBEAT, ghRegDelete: DEREGISTER, ghRegExpire: EXPIRE, ghRegMerge: MERGE };
  const c = redis as unknown as Partial<Raw>;
  if (!c.ghRegPut) for (const [name, lua] of Object.entries(scripts)) redis.defineCommand(name, { numberOfKeys: 5, lua });
  const raw = c as Raw;
  return {
    ghRegPut: (keys, ...args) => raw.ghRegPut(...keys, ...args),
    ghRegHeartbeat: (keys, ...args) => raw.ghRegHeartbeat(...keys, ...args),
    ghRegDelete: (keys, ...args) => raw.ghRegDelete(...keys, ...args),
    ghRegExpire: (keys, ...args) => raw.ghRegExpire(...keys, ...args),
    ghRegMerge: (keys, ...args) => raw.ghRegMerge(...keys, ...args),
  };
}
