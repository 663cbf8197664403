-- ARGV[7]: permits needed (requests waiting), ARGV[8]: extra permits
-- wanted ahead of need. Grants only when the session's turn has come: the
-- free permits exceed the sessions queued before it. The need is granted
-- as far as permits are free; the extra is capped at a fair block,
-- free / (sessions + 1), so an idle fleet hands out big blocks and a busy
-- one exactly what is needed.
if not alive then return reply(1, 0) end
refresh()
local need = tonumber(ARGV[7])
local extra = tonumber(ARGV[8])
local want = need + extra
local free = limit - total
local rank = redis.call('ZRANK', queue, s)
local ahead = rank
if rank == false then ahead = redis.call('ZCARD', queue) end
local block = math.floor(free / (redis.call('ZCARD', exp) + 1))
local g = math.min(need + math.min(extra, block), free - ahead)
if learn_until > now then g = 0 end
if g > 0 then
  redis.call('HINCRBY', held, s, g)
  redis.call('HINCRBY', meta, 'total', g)
  total = total + g
  unqueue()
  return reply(0, g)
end
if want > 0 then
  if rank == false then
    local ticket = redis.call('HINCRBY', meta, 'seq', 1)
    redis.call('ZADD', queue, ticket, s)
    redis.call('PUBLISH', channel, 'want')
  end
  redis.call('ZADD', qexp, now + wait, s)
end
return reply(0, 0)
