-- Closes the session and gives back what it held; the last session out
-- deletes every key of the limit.
local h = mine()
if h > 0 then
  redis.call('HINCRBY', meta, 'total', -h)
  total = total - h
end
redis.call('HDEL', held, s)
redis.call('ZREM', exp, s)
unqueue()
if redis.call('ZCARD', exp) == 0 then
  redis.call('DEL', meta, exp, held, queue, qexp)
  return {0, 0, 0, limit, 0, 0, 0, 0, epoch, 0}
end
if h > 0 and redis.call('ZCARD', queue) > 0 then redis.call('PUBLISH', channel, 'free') end
return reply(0, 0)
