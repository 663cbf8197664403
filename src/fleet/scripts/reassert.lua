-- ARGV[7]: permits the session has in use. The store takes its word, even
-- past the limit: grants stop until the total is back under it.
refresh()
local n = tonumber(ARGV[7])
local h = mine()
if n > 0 then redis.call('HSET', held, s, n) else redis.call('HDEL', held, s) end
redis.call('HINCRBY', meta, 'total', n - h)
total = total + n - h
return reply(0, 0)
