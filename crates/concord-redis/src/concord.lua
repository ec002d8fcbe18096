#!lua name=concord

-- Concord's server-side library: the whole append decision in one atomic call.
--
-- It mirrors concord_core::plan_append, in the same order: duplicate check, expectation,
-- rebase rule, conflict. Every check runs before the first write, so an append either
-- writes all of its entries or none (Redis does not roll back a function that fails half
-- way, so nothing after the first write may fail). See docs/design/redis-layout.md.
--
-- Numbers are Lua doubles: versions and positions are exact up to 2^53.

local LIBRARY_VERSION = 1

local function int(x)
  return string.format('%d', x)
end

-- The version stored in the stream-heads hash as "<version> <last position>".
local function stream_version(heads_key, stream)
  local state = redis.call('HGET', heads_key, stream)
  if not state then
    return 0
  end
  return tonumber(string.match(state, '^(%d+)'))
end

local function holds(kind, expected, actual)
  if kind == 'exact' then
    return expected == actual
  elseif kind == 'no_stream' then
    return actual == 0
  elseif kind == 'exists' then
    return actual ~= 0
  end
  return true
end

local function position_of(stream_key, version)
  local entry = redis.call('XRANGE', stream_key, int(version) .. '-0', int(version) .. '-0')
  if #entry == 0 then
    return 0
  end
  local fields = entry[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'position' then
      return tonumber(fields[i + 1])
    end
  end
  return 0
end

-- KEYS: 1 stream, 2 ids (hash event id -> version), 3 types (hash type -> last version
--       with that type), 4 global stream, 5 head counter, 6 stream index (sorted set),
--       7 stream heads (hash stream -> "<version> <last position>")
-- ARGV: stream, expected kind (exact|no_stream|exists|any), expected version,
--       rebase (0|1), concurrent events max, n rebase_unless types, the types...,
--       n events, then per event: id, type, data, metadata, tags (comma-joined)
--
-- Reply (first element says which):
--   {'appended', first_version, last_version, first_position, last_position}
--   {'rebased', first_version, last_version, first_position, last_position, expected,
--      concurrent entries}
--   {'duplicate', first_version, last_version, first_position, last_position}
--   {'partial', existing ids...}
--   {'conflict', actual, truncated (0|1), concurrent entries}
local function append(keys, args)
  local stream_key, ids_key, types_key, all_key, head_key, index_key, heads_key =
    keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], keys[7]
  local stream = args[1]
  local kind = args[2]
  local expected = tonumber(args[3])
  local rebase = args[4] == '1'
  local concurrent_max = tonumber(args[5])
  local unless_count = tonumber(args[6])
  local at = 7
  local unless = {}
  for k = 1, unless_count do
    unless[k] = args[at]
    at = at + 1
  end
  local count = tonumber(args[at])
  at = at + 1
  local first_event = at

  -- 1. Duplicate check, whatever the expectation says.
  local ids = {}
  for k = 1, count do
    ids[k] = args[first_event + (k - 1) * 5]
  end
  local found = redis.call('HMGET', ids_key, unpack(ids))
  local existing = {}
  for k = 1, count do
    if found[k] then
      existing[#existing + 1] = ids[k]
    end
  end
  if #existing > 0 then
    if #existing == count then
      local consecutive = true
      for k = 2, count do
        if tonumber(found[k]) ~= tonumber(found[k - 1]) + 1 then
          consecutive = false
        end
      end
      if consecutive then
        local first, last = tonumber(found[1]), tonumber(found[count])
        return {'duplicate', first, last, position_of(stream_key, first), position_of(stream_key, last)}
      end
    end
    local reply = {'partial'}
    for k = 1, #existing do
      reply[#reply + 1] = existing[k]
    end
    return reply
  end

  -- 2. The expectation.
  local actual = stream_version(heads_key, stream)
  local rebased_from = nil
  if not holds(kind, expected, actual) then
    -- 3. The rebase rule, over every concurrent event: a listed type whose last
    --    occurrence is after the expected version blocks the rebase.
    local may_rebase = rebase and kind == 'exact' and expected < actual
    if may_rebase then
      for k = 1, unless_count do
        local last = redis.call('HGET', types_key, unless[k])
        if last and tonumber(last) > expected then
          may_rebase = false
          break
        end
      end
    end
    if may_rebase then
      rebased_from = expected
    else
      -- 4. Conflict, with the first concurrent events.
      local first = nil
      if kind == 'exact' then
        first = expected + 1
      elseif kind == 'no_stream' then
        first = 1
      end
      if first == nil or first > actual then
        return {'conflict', actual, 0, {}}
      end
      local entries = redis.call('XRANGE', stream_key, int(first) .. '-0', '+', 'COUNT', concurrent_max)
      local truncated = 0
      if first + #entries <= actual then
        truncated = 1
      end
      return {'conflict', actual, truncated, entries}
    end
  end

  -- Write: every check has passed, nothing below can fail.
  local time = redis.call('TIME')
  local recorded_at = int(tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
  local head = tonumber(redis.call('GET', head_key) or '0')
  for k = 1, count do
    local e = first_event + (k - 1) * 5
    local id, event_type, data, metadata, tags = args[e], args[e + 1], args[e + 2], args[e + 3], args[e + 4]
    local version = int(actual + k)
    local position = int(head + k)
    redis.call('XADD', stream_key, version .. '-0',
      'position', position, 'id', id, 'type', event_type, 'data', data, 'metadata', metadata,
      'tags', tags, 'recorded_at', recorded_at)
    redis.call('XADD', all_key, position .. '-0',
      'stream', stream, 'version', version, 'id', id, 'type', event_type, 'data', data,
      'metadata', metadata, 'tags', tags, 'recorded_at', recorded_at)
    redis.call('HSET', ids_key, id, version)
    redis.call('HSET', types_key, event_type, version)
  end
  local last_version, last_position = actual + count, head + count
  redis.call('SET', head_key, int(last_position))
  redis.call('HSET', heads_key, stream, int(last_version) .. ' ' .. int(last_position))
  redis.call('ZADD', index_key, 0, stream)
  if rebased_from == nil then
    return {'appended', actual + 1, last_version, head + 1, last_position}
  end
  local over = redis.call('XRANGE', stream_key, int(rebased_from + 1) .. '-0', int(actual) .. '-0',
    'COUNT', concurrent_max)
  return {'rebased', actual + 1, last_version, head + 1, last_position, rebased_from, over}
end

local function version()
  return LIBRARY_VERSION
end

redis.register_function('concord_append_v1', append)
redis.register_function{function_name = 'concord_version', callback = version, flags = {'no-writes'}}
