-- ARGV[7]: the fleet's new limit.
limit = tonumber(ARGV[7])
redis.call('HSET', meta, 'limit', limit)
if alive then refresh() end
redis.call('PUBLISH', channel, 'limit')
return reply(0, 0)
