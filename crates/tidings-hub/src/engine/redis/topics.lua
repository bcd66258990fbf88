-- Lists every topic ever published to, with its newest id, publish count and retained
-- events (after trimming expired ones).
-- ARGV: prefix, max events per topic, max age in ms (0: none).
-- Returns: per topic {name, newest id, published, retained}.
local p = ARGV[1]
local max = tonumber(ARGV[2])
local cutoff = age_cutoff(now_ms(), tonumber(ARGV[3]))
local out = {}
local last = redis.call('HGETALL', p .. 'last')
for i = 1, #last, 2 do
  local topic = last[i]
  trim(p, topic, max, cutoff)
  local published = redis.call('HGET', p .. 'published', topic) or '0'
  out[#out + 1] = { topic, last[i + 1], published, redis.call('XLEN', p .. 'topic:' .. topic) }
end
return out
