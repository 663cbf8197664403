-- Runs first in every script of the fleet (see src/fleet/store.rs, and
-- src/fleet/memory.rs for the same semantics in Rust).
-- KEYS: meta (HASH limit/total/epoch/learn_until/seq), exp (ZSET session ->
-- lease expiry, ms of Redis TIME), held (HASH session -> permits),
-- queue (ZSET session -> ticket), qexp (ZSET session -> queue place expiry).
-- ARGV: session, ttl ms, wait ms, epoch known to the caller (0: none),
-- configured limit, hint channel, then the script's own arguments.
redis.replicate_commands()
local meta, exp, held, queue, qexp = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local s = ARGV[1]
local ttl = tonumber(ARGV[2])
local wait = tonumber(ARGV[3])
local known = tonumber(ARGV[4])
local configured = tonumber(ARGV[5])
local channel = ARGV[6]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- A missing accounting is created; a caller that knew an older one proves
-- the data was lost, so nothing new is granted for one TTL while live
-- sessions reassert what they hold.
if redis.call('HEXISTS', meta, 'limit') == 0 then
  local learn = 0
  if known > 0 then learn = now + ttl end
  redis.call('HSET', meta, 'limit', configured, 'total', 0, 'epoch', now, 'learn_until', learn, 'seq', 0)
end
local limit = tonumber(redis.call('HGET', meta, 'limit'))
local epoch = tonumber(redis.call('HGET', meta, 'epoch'))
local learn_until = tonumber(redis.call('HGET', meta, 'learn_until'))
-- A caller from an older epoch arriving within one TTL of the new one's
-- creation: the accounting was lost and recreated by a newcomer; learn
-- until one TTL after the creation.
if known > 0 and known ~= epoch and now < epoch + ttl and learn_until < epoch + ttl then
  learn_until = epoch + ttl
  redis.call('HSET', meta, 'learn_until', learn_until)
end

-- Reap expired sessions: what they held comes back.
local dead = redis.call('ZRANGEBYSCORE', exp, '-inf', now)
for _, d in ipairs(dead) do
  local h = tonumber(redis.call('HGET', held, d) or 0)
  if h > 0 then redis.call('HINCRBY', meta, 'total', -h) end
  redis.call('HDEL', held, d)
  redis.call('ZREM', queue, d)
  redis.call('ZREM', qexp, d)
end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', exp, '-inf', now) end
-- Reap queue places not asked for again in time.
local stale = redis.call('ZRANGEBYSCORE', qexp, '-inf', now)
for _, w in ipairs(stale) do redis.call('ZREM', queue, w) end
if #stale > 0 then redis.call('ZREMRANGEBYSCORE', qexp, '-inf', now) end

local total = tonumber(redis.call('HGET', meta, 'total'))
local alive = redis.call('ZSCORE', exp, s) ~= false

local function refresh()
  redis.call('ZADD', exp, now + ttl, s)
end

local function mine()
  return tonumber(redis.call('HGET', held, s) or 0)
end

local function unqueue()
  redis.call('ZREM', queue, s)
  redis.call('ZREM', qexp, s)
end

-- {lost, granted, held, limit, total, sessions, queued, is_queued, epoch, learning ms}
local function reply(lost, granted)
  for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, 3 * ttl) end
  local learning = 0
  if learn_until > now then learning = learn_until - now end
  local is_queued = 0
  if redis.call('ZSCORE', queue, s) ~= false then is_queued = 1 end
  return {lost, granted, mine(), limit, total, redis.call('ZCARD', exp),
    redis.call('ZCARD', queue), is_queued, epoch, learning}
end
