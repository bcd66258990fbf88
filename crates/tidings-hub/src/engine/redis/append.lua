-- Stores a batch of events atomically and returns their ids.
-- ARGV: prefix, a token no other append has, max events per topic, max age in ms (0:
-- none), log length, then four values per event: its topics (newline-separated), its
-- data, its type ('' for none, else '=' and the type) and its retry in ms ('' for none).
local p = ARGV[1]

-- Run twice with one token (the hub retries when its connection dropped, and cannot know
-- whether the first run happened): the second returns the first one's ids.
local done_key = p .. 'append:' .. ARGV[2]
local done = redis.call('GET', done_key)
if done then
  local ids = {}
  for id in string.gmatch(done, '[^ ]+') do
    ids[#ids + 1] = id
  end
  return ids
end

local max = tonumber(ARGV[3])
local now = now_ms()
local cutoff = age_cutoff(now, tonumber(ARGV[4]))
local log_len = ARGV[5]
local first = 6

-- Nothing is written unless everything can be: a key of the wrong type under the prefix
-- would fail a write half-way, and a script's writes before an error stay.
local wrong = wrong_type(p .. 'id', 'string') or wrong_type(p .. 'origin', 'string')
  or wrong_type(p .. 'log', 'stream') or wrong_type(p .. 'last', 'hash')
  or wrong_type(p .. 'published', 'hash') or wrong_type(p .. 'trimmed', 'hash')
  or wrong_type(p .. 'names', 'zset') or wrong_type(done_key, 'string')
for i = first, #ARGV, 4 do
  for topic in string.gmatch(ARGV[i], '[^\n]+') do
    wrong = wrong or wrong_type(p .. 'topic:' .. topic, 'stream')
  end
end
if wrong then
  return redis.error_reply('WRONGTYPE ' .. wrong .. '; is another program writing under this prefix? nothing was stored')
end

-- The next ids follow the newest one (or the origin), even if the clock went back.
local last = redis.call('GET', p .. 'id') or origin_or_new(p, now)
local ms, seq = now, -1
local lms, lseq = id_parts(last)
if lms >= now then
  ms, seq = lms, lseq
end

local ids = {}
-- After a wipe this is the new origin, newer than what any hub's tail passed on: each
-- sees the hole, and the fan-out finds everything before the origin gone.
local prev = last
for i = first, #ARGV, 4 do
  seq = seq + 1
  local id = string.format('%d-%d', ms, seq)
  local topics, data, etype, retry = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local fields = { 't', topics, 'd', data }
  if etype ~= '' then
    fields[#fields + 1] = 'e'
    fields[#fields + 1] = string.sub(etype, 2)
  end
  if retry ~= '' then
    fields[#fields + 1] = 'r'
    fields[#fields + 1] = retry
  end
  -- The log feeds every hub's live tail; `p` (the previous id) lets a tail see a hole.
  redis.call('XADD', p .. 'log', 'MAXLEN', '~', log_len, id, 'p', prev, unpack(fields))
  for topic in string.gmatch(topics, '[^\n]+') do
    redis.call('XADD', p .. 'topic:' .. topic, id, unpack(fields))
    redis.call('HINCRBY', p .. 'published', topic, 1)
    if redis.call('HSET', p .. 'last', topic, id) == 1 then
      -- A new topic: into the sorted list patterns seek in.
      redis.call('ZADD', p .. 'names', 0, topic)
    end
    trim(p, topic, max, cutoff)
  end
  prev = id
  ids[#ids + 1] = id
end
redis.call('SET', p .. 'id', prev)
redis.call('SET', done_key, table.concat(ids, ' '), 'EX', 600)
return ids
