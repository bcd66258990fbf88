-- Records that events up to an id were lost (Redis came back with older data): raises
-- the origin to it, so every read says nothing at or before it is complete, and a resume
-- from before it gets a gap. ARGV: prefix, the id.
local p = ARGV[1]
local origin = redis.call('GET', p .. 'origin')
if not origin or id_less(origin, ARGV[2]) then
  redis.call('SET', p .. 'origin', ARGV[2])
end
return redis.status_reply('OK')
