-- Sets the origin (an id below every id to come) if there is none, and returns the
-- newest id, or the origin before the first event. ARGV: prefix.
local p = ARGV[1]
if not redis.call('GET', p .. 'origin') then
  redis.call('SET', p .. 'origin', string.format('%d-0', now_ms()))
end
return redis.call('GET', p .. 'id') or redis.call('GET', p .. 'origin')
