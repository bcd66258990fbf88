-- Helpers shared by the Redis engine's scripts. The keys are listed in mod.rs; `p` is
-- the key prefix. Ids are `<ms>-<seq>` strings, as Redis streams write them.

local function id_parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function id_less(a, b)
  local ams, aseq = id_parts(a)
  local bms, bseq = id_parts(b)
  return ams < bms or (ams == bms and aseq < bseq)
end

-- Milliseconds since the Unix epoch, by the Redis server's clock (one clock for every hub).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The age cutoff, as a string of milliseconds: events stored before it are expired.
-- '0' when there is no age limit.
local function age_cutoff(now, max_age_ms)
  if max_age_ms > 0 and now > max_age_ms then
    return string.format('%d', now - max_age_ms)
  end
  return '0'
end

-- The origin (an id below every stored one), and whether it was made just now: no
-- origin means a new family, or one whose data was wiped, and then everything before now
-- is gone, so a resume from an older id reports a gap.
local function origin_or_new(p, now)
  local origin = redis.call('GET', p .. 'origin')
  if origin then
    return origin, false
  end
  origin = string.format('%d-0', now)
  redis.call('SET', p .. 'origin', origin)
  return origin, true
end

-- A description of `key` when it exists with another type than `want`, else nil.
local function wrong_type(key, want)
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= want then
    return key .. ' is a ' .. found .. ', not a ' .. want
  end
  return nil
end

-- Raises a topic's trimmed-through id (the newest id it no longer holds) to `id`.
local function note_trimmed(p, topic, id)
  local old = redis.call('HGET', p .. 'trimmed', topic)
  if not old or id_less(old, id) then
    redis.call('HSET', p .. 'trimmed', topic, id)
  end
end

-- Trims a topic's stream to its newest `max` events and, with a cutoff, to events stored
-- from the cutoff on, and remembers the newest id it trimmed (Redis 7.0's XTRIM does not).
local function trim(p, topic, max, cutoff)
  local key = p .. 'topic:' .. topic
  local excess = redis.call('XLEN', key) - max
  if excess > 0 then
    local gone = redis.call('XRANGE', key, '-', '+', 'COUNT', excess)
    note_trimmed(p, topic, gone[#gone][1])
    redis.call('XTRIM', key, 'MAXLEN', max)
  end
  if cutoff ~= '0' then
    -- Look at the oldest entry first: XREVRANGE from a bound below every entry walks
    -- the whole stream (about 50 us for 1000 entries).
    local limit = cutoff .. '-0'
    local oldest = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
    if #oldest > 0 and id_less(oldest[1][1], limit) then
      local gone = redis.call('XREVRANGE', key, '(' .. limit, '-', 'COUNT', 1)
      note_trimmed(p, topic, gone[1][1])
      redis.call('XTRIM', key, 'MINID', limit)
    end
  end
end
