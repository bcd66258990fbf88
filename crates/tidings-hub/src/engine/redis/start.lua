-- Sets the origin (an id below every id to come) if there is none, and returns the
-- newest id, or the origin before the first event. ARGV: prefix.
local p = ARGV[1]
local origin = origin_or_new(p, now_ms())
return redis.call('GET', p .. 'id') or origin
