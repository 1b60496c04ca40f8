/**
 * The Lua scripts of the hub's cluster mode (EVALSHA through ioredis' `defineCommand`): each is one
 * atomic step, so a presence set and the sequence number that orders its changes never disagree,
 * and the per-user cap's check and count are one step across instances.
 */
import type { ChainableCommander, Redis } from 'ioredis';

/** ARGV: op (on/off), user, ttl ms, publish command, channel, instance. */
const PRESENCE_OP = `
if ARGV[1] == 'on' then redis.call('SADD', KEYS[1], ARGV[2]) else redis.call('SREM', KEYS[1], ARGV[2]) end
local s = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call(ARGV[4], ARGV[5], 'p\\n' .. ARGV[6] .. '\\n' .. s .. '\\n' .. ARGV[1] .. '\\n' .. ARGV[2])
return s`;

/** ARGV: ttl ms, publish command, channel, instance, users... (the whole set, written again). */
const PRESENCE_RESET = `
redis.call('DEL', KEYS[1])
for i = 5, #ARGV, 1000 do redis.call('SADD', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV))) end
local s = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call(ARGV[2], ARGV[3], 'p\\n' .. ARGV[4] .. '\\n' .. s .. '\\nreset\\n')
return s`;

/** ARGV: publish command, channel, instance. The instance leaves (a graceful stop). */
const PRESENCE_GONE = `
redis.call('DEL', KEYS[1], KEYS[2])
redis.call(ARGV[1], ARGV[2], 'p\\n' .. ARGV[3] .. '\\n0\\ngone\\n')
return 1`;

/** KEYS[1]: this instance's caps hash, the rest: the other live instances'. ARGV: user, max, ttl ms. */
const CAPS_ADMIT = `
local total = 0
for i = 1, #KEYS do
  local v = redis.call('HGET', KEYS[i], ARGV[1])
  if v then total = total + tonumber(v) end
end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`;

/** ARGV: user, delta, ttl ms. A count that reaches 0 leaves the hash. */
const CAPS_ADD = `
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return n`;

/** ARGV: ttl ms, then user, count pairs (this instance's whole share, written again). */
const CAPS_RESET = `
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 1000 do redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV))) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1`;

/**
 * KEYS: the user's stream, its meta hash (epoch `e`, last offset `o`). ARGV: the client frame
 * without its closing brace, size, ttl ms, a new epoch (used when the stream starts). Returns the
 * whole frame, `epoch` and `offset` in it, as stored.
 */
const HISTORY_APPEND = `
local e = redis.call('HGET', KEYS[2], 'e')
if not e then
  e = ARGV[4]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', e, 'o', 0)
end
local o = redis.call('HINCRBY', KEYS[2], 'o', 1)
local f = ARGV[1] .. ',"epoch":"' .. e .. '","offset":' .. o .. '}'
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '0-' .. o, 'f', f)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return f`;

/**
 * KEYS: as {@link HISTORY_APPEND}. ARGV: epoch, offset. Returns `{'ok', frames...}` (the frames
 * after offset, in order) or `{'failed'}` (another epoch, or entries after offset were trimmed).
 */
const HISTORY_READ = `
local e = redis.call('HGET', KEYS[2], 'e')
if not e or e ~= ARGV[1] then return {'failed'} end
local last = tonumber(redis.call('HGET', KEYS[2], 'o'))
local from = tonumber(ARGV[2])
if from > last then return {'failed'} end
local out = {'ok'}
if from == last then return out end
local entries = redis.call('XRANGE', KEYS[1], '0-' .. (from + 1), '+')
if #entries == 0 or entries[1][1] ~= ('0-' .. (from + 1)) then return {'failed'} end
for i = 1, #entries do out[#out + 1] = entries[i][2][2] end
return out`;

/**
 * KEYS: as {@link HISTORY_APPEND}. ARGV: ttl ms, a new epoch (used when the user has no history
 * yet: it starts here, at offset 0). Returns `{epoch, offset}`: where a new client starts.
 */
const HISTORY_POSITION = `
local e = redis.call('HGET', KEYS[2], 'e')
if not e then
  e = ARGV[2]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', e, 'o', 0)
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return {e, tonumber(redis.call('HGET', KEYS[2], 'o'))}`;

/** The scripts as commands of a pipeline (numbers are sent as strings). */
export interface HubScripts {
  hubPresenceOp(set: string, seq: string, op: 'on' | 'off', userId: string, ttl: number, publish: string, channel: string, instance: string): HubPipeline;
  hubPresenceReset(set: string, seq: string, ttl: number, publish: string, channel: string, instance: string, users: string[]): HubPipeline;
  hubPresenceGone(set: string, seq: string, publish: string, channel: string, instance: string): HubPipeline;
  /** Arrays are flattened by ioredis; the callback gets this command's own reply. */
  hubCapsAdmit(numKeys: number, keysAndArgs: (string | number)[], cb: (err: Error | null | undefined, admitted: unknown) => void): HubPipeline;
  hubCapsAdd(hash: string, userId: string, delta: number, ttl: number): HubPipeline;
  hubCapsReset(hash: string, ttl: number, pairs: (string | number)[]): HubPipeline;
  hubHistoryAppend(stream: string, meta: string, framePrefix: string, size: number, ttl: number, epoch: string, cb: (err: Error | null | undefined, frame: unknown) => void): HubPipeline;
  hubHistoryPosition(stream: string, meta: string, ttl: number, epoch: string, cb: (err: Error | null | undefined, res: unknown) => void): HubPipeline;
  hubHistoryRead(stream: string, meta: string, epoch: string, offset: number, cb: (err: Error | null | undefined, res: unknown) => void): HubPipeline;
}

/** A pipeline with the hub's scripts. */
export type HubPipeline = ChainableCommander & HubScripts;

const kDefined = Symbol('gatehouse.hubScripts');

/** Defines the scripts on a connection (once per connection) and returns a pipeline that has them. */
export function hubPipeline(redis: Redis): HubPipeline {
  const r = redis as Redis & { [kDefined]?: boolean };
  if (!r[kDefined]) {
    r[kDefined] = true;
    redis.defineCommand('hubPresenceOp', { numberOfKeys: 2, lua: PRESENCE_OP });
    redis.defineCommand('hubPresenceReset', { numberOfKeys: 2, lua: PRESENCE_RESET });
    redis.defineCommand('hubPresenceGone', { numberOfKeys: 2, lua: PRESENCE_GONE });
    redis.defineCommand('hubCapsAdmit', { lua: CAPS_ADMIT });
    redis.defineCommand('hubCapsAdd', { numberOfKeys: 1, lua: CAPS_ADD });
    redis.defineCommand('hubCapsReset', { numberOfKeys: 1, lua: CAPS_RESET });
    redis.defineCommand('hubHistoryAppend', { numberOfKeys: 2, lua: HISTORY_APPEND });
    redis.defineCommand('hubHistoryRead', { numberOfKeys: 2, lua: HISTORY_READ });
    redis.defineCommand('hubHistoryPosition', { numberOfKeys: 2, lua: HISTORY_POSITION });
  }
  return redis.pipeline() as HubPipeline;
}
