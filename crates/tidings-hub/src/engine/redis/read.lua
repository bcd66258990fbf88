-- Reads the events after an id of every topic a filter matches, in one snapshot.
-- ARGV: prefix, the id to read after, how many per topic, max events per topic, max age
-- in ms (0: none), then the filter's entries: '=' and a topic, or '*' and a prefix.
-- Returns: the origin, then per matched topic {trimmed-through id or '', entries}.
local p = ARGV[1]
local after = ARGV[2]
local count = ARGV[3]
local max = tonumber(ARGV[4])
local now = now_ms()
local cutoff = age_cutoff(now, tonumber(ARGV[5]))

local topics, seen = {}, {}
for i = 6, #ARGV do
  local kind, name = string.sub(ARGV[i], 1, 1), string.sub(ARGV[i], 2)
  if kind == '=' then
    if not seen[name] then
      seen[name] = true
      topics[#topics + 1] = name
    end
  else
    -- The topics under the prefix: a seek in the sorted names, not a look at every
    -- topic (no UTF-8 text contains the byte 0xFF, so it bounds the range).
    local matching
    if name == '' then
      matching = redis.call('ZRANGE', p .. 'names', 0, -1)
    else
      matching = redis.call('ZRANGEBYLEX', p .. 'names', '[' .. name, '(' .. name .. '\255')
    end
    for _, topic in ipairs(matching) do
      if not seen[topic] then
        seen[topic] = true
        topics[#topics + 1] = topic
      end
    end
  end
end

local found = {}
for _, topic in ipairs(topics) do
  trim(p, topic, max, cutoff)
  local trimmed = redis.call('HGET', p .. 'trimmed', topic) or ''
  local entries = redis.call('XRANGE', p .. 'topic:' .. topic, '(' .. after, '+', 'COUNT', count)
  found[#found + 1] = { trimmed, entries }
end
return { origin_or_new(p, now), found }
