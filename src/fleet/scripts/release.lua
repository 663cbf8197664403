-- ARGV[7]: permits given back; ARGV[8]: 1 to leave the queue too.
if not alive then return reply(1, 0) end
refresh()
local h = mine()
local n = math.min(tonumber(ARGV[7]), h)
if n > 0 then
  if h == n then redis.call('HDEL', held, s) else redis.call('HINCRBY', held, s, -n) end
  redis.call('HINCRBY', meta, 'total', -n)
  total = total - n
end
if ARGV[8] == '1' then unqueue() end
if n > 0 and redis.call('ZCARD', queue) > 0 then redis.call('PUBLISH', channel, 'free') end
return reply(0, 0)
