#!lua name=concord

-- Concord's server-side library: the whole append decision in one atomic call.
--
-- It mirrors concord_core::plan_multi_append (each part as plan_append: duplicate check,
-- expectation, rebase rule, conflict; then every stale part reported; then the query
-- condition through the type and tag indexes). A single append is a one-part call. Every
-- check runs before the first write, so an append either writes all of its entries or none
-- (Redis does not roll back a function that fails half way, so nothing after the first
-- write may fail). See docs/design/redis-layout.md.
--
-- Numbers are Lua doubles: versions and positions are exact up to 2^53.

local LIBRARY_VERSION = 11

-- Arguments per event: id, type, data, metadata, tags, content type.
local EVENT_ARGS = 6

-- The epoch names one unbroken history of this Lua VM's writes. A rebased write names
-- its concurrent events by their version range and the epoch only (a conflict returns its
-- entries: one round trip, whoever wrote them); the
-- client lists them from the events it saw written in the same epoch, or reads them with
-- XRANGE. Converting those entries to Lua and back cost about 4 us per entry, more than
-- the append itself. The epoch changes whenever events may have been lost or written by
-- someone else: a new VM (restart, failover, library reload) starts a new one, and so does
-- a head counter that is not where this VM left it (FLUSHALL, a node that was a replica
-- meanwhile).
local epoch = nil
local epochs_started = 0
local heads_written = {}

local function current_epoch(head_key, head)
  if epoch == nil or heads_written[head_key] ~= head then
    local time = redis.call('TIME')
    epochs_started = epochs_started + 1
    epoch = time[1] .. '.' .. time[2] .. '.' .. epochs_started
  end
  return epoch
end

local function int(x)
  return string.format('%d', x)
end

-- A stream's lifecycle (library version 6), from the lifecycle hash: stream ->
-- "<deleted_through> <tombstoned 0|1> <max_count> <max_age_seconds> <truncate_before>
-- <erased_through>" (0: no such setting). nil when the stream has none: never deleted, no
-- retention settings. It mirrors concord_core::StreamLifecycle.
local function lifecycle_of(lifecycle_key, stream)
  local text = redis.call('HGET', lifecycle_key, stream)
  if not text then
    return nil
  end
  local f = {}
  for n in string.gmatch(text, '%d+') do
    f[#f + 1] = tonumber(n)
  end
  return {deleted = f[1], tombstoned = f[2] == 1, max_count = f[3], max_age = f[4],
    truncate = f[5], erased = f[6]}
end

local function lifecycle_text(lc)
  return int(lc.deleted) .. ' ' .. (lc.tombstoned and '1' or '0') .. ' ' .. int(lc.max_count)
    .. ' ' .. int(lc.max_age) .. ' ' .. int(lc.truncate) .. ' ' .. int(lc.erased)
end

-- The first version reads show (StreamLifecycle::first_kept), never below what a scavenge
-- erased.
local function first_kept(lc, last)
  if lc == nil then
    return 1
  end
  local first = lc.deleted + 1
  if lc.truncate > first then
    first = lc.truncate
  end
  if lc.max_count > 0 and last - lc.max_count + 1 > first then
    first = last - lc.max_count + 1
  end
  if lc.erased + 1 > first then
    first = lc.erased + 1
  end
  return first
end

-- The version expectations are checked against (StreamLifecycle::visible_version): 0
-- when a soft delete hid every event.
local function visible_version(lc, last)
  if lc ~= nil and last <= lc.deleted then
    return 0
  end
  return last
end

-- A stream's last version ever written: entry n has id "<n>-0", and only a scavenge
-- removes entries, always a prefix whose length it records (erased_through). XLEN is
-- O(1); the stream-heads hash holds the same number, but it was read with HGET, which
-- scans a small hash field by field (see HASH_TABLE_FIELD).
local function stream_version(stream_key, lc)
  local n = redis.call('XLEN', stream_key)
  if lc ~= nil then
    return n + lc.erased
  end
  return n
end

-- HSET of a flat field/value list, in slices: unpack is bounded by Lua's C stack (~8000
-- values), and a failure here would be half way through a write.
local HSET_SLICE = 2000

local function hset_all(key, list)
  for i = 1, #list, HSET_SLICE do
    redis.call('HSET', key, unpack(list, i, math.min(i + HSET_SLICE - 1, #list)))
  end
end

-- ARGV[from .. from + n - 1] as a list (a loop, not unpack: unpack is bounded by Lua's C
-- stack, and a list of types has no bound of its own here).
local function arg_list(args, from, n)
  local list = {}
  for k = 1, n do
    list[k] = args[from + k - 1]
  end
  return list
end

-- A count from ARGV: most are 0 or 1, which are told apart from the interned string without
-- tonumber (a string-to-number conversion costs about as much as a small command here).
local function count(arg)
  if arg == '0' then
    return 0
  elseif arg == '1' then
    return 1
  end
  return tonumber(arg)
end

-- The hashes read by field on every append (a stream's ids, the stream heads) are kept
-- as hash tables. While a hash has at most hash-max-listpack-entries short fields (128 to
-- 512), Redis stores it as a listpack, which HMGET, HGET and HSET scan field by field: the
-- duplicate check of a new id read every id of the stream (under callgrind, appends of 10
-- events to streams of a few hundred cost 105 000 instructions per event, 72 000 with hash
-- tables). A field longer than hash-max-listpack-value (64 bytes by default) converts a
-- hash for good, so this one is written once into a stream's ids when the stream reaches
-- HASH_TABLE_AT events (shorter streams stay compact and cheap to scan), and into the heads
-- with each new stream. It is neither an event id (a UUID) nor a stream name (`$` is
-- reserved), so no lookup can find it.
local HASH_TABLE_FIELD = '$hash-table: a field longer than hash-max-listpack-value keeps this hash a hash table...............'
local HASH_TABLE_AT = 64

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

-- The decision for one part, in plan_append's order. Reads only.
-- Returns one of:
--   {kind = 'write', actual = v, rebased_from = e or nil}
--   {kind = 'duplicate', first = v, last = v}
--   {kind = 'partial', ids = {...}}
--   {kind = 'conflict', actual = v, first = v or nil}
local function plan_part(part)
  local ids = part.ids
  local lc = part.lc
  local last = stream_version(part.stream_key, lc)
  local floor = first_kept(lc, last)
  -- 1. Duplicate check, whatever the expectation says. The id of an event that reads no
  --    longer show but a scavenge has not erased stays taken (check_hidden_ids).
  local found = redis.call('HMGET', part.ids_key, unpack(ids))
  if lc ~= nil then
    local hidden = nil
    for k = 1, #ids do
      if found[k] and tonumber(found[k]) < floor then
        hidden = hidden or {}
        hidden[#hidden + 1] = ids[k]
      end
    end
    if hidden then
      return {kind = 'partial', ids = hidden}
    end
  end
  local existing = nil
  for k = 1, #ids do
    if found[k] then
      existing = existing or {}
      existing[#existing + 1] = ids[k]
    end
  end
  if existing then
    if #existing == #ids then
      local consecutive = true
      for k = 2, #ids do
        if tonumber(found[k]) ~= tonumber(found[k - 1]) + 1 then
          consecutive = false
        end
      end
      if consecutive then
        return {kind = 'duplicate', first = tonumber(found[1]), last = tonumber(found[#ids])}
      end
    end
    return {kind = 'partial', ids = existing}
  end
  -- 2. The expectation, against the visible version; a write goes on after the last.
  local actual = visible_version(lc, last)
  if holds(part.kind, part.expected, actual) then
    return {kind = 'write', actual = last}
  end
  -- 3. The rebase rule, over every concurrent event: a listed type whose last
  --    occurrence is after the expected version blocks the rebase.
  local may_rebase = part.rebase and part.kind == 'exact' and part.expected < actual
  if may_rebase then
    for k = 1, #part.unless do
      local last_of_type = redis.call('HGET', part.types_key, part.unless[k])
      if last_of_type and tonumber(last_of_type) > math.max(part.expected, floor - 1) then
        may_rebase = false
        break
      end
    end
  end
  if may_rebase then
    return {kind = 'write', actual = last, rebased_from = math.max(part.expected, floor - 1)}
  end
  -- 4. Conflict.
  local first = nil
  if part.kind == 'exact' then
    first = part.expected + 1
  elseif part.kind == 'no_stream' then
    first = 1
  end
  if first ~= nil and first < floor then
    first = floor
  end
  if first ~= nil and first > actual then
    first = nil
  end
  return {kind = 'conflict', actual = actual, first = first}
end

-- The positions (ascending, at most `want`) after `after` of events matching one query
-- item, from the type and tag index streams: never a scan of the global stream.
local function item_positions(item, after, want, type_prefix, tag_prefix)
  local out = {}
  local from = int(after + 1) .. '-0'
  if #item.tags == 0 then
    -- Any of the types: each type's index is already in position order.
    for t = 1, #item.types do
      local entries = redis.call('XRANGE', type_prefix .. item.types[t], from, '+', 'COUNT', want)
      for k = 1, #entries do
        out[#out + 1] = tonumber(string.match(entries[k][1], '^(%d+)'))
      end
    end
    return out
  end
  -- All of the tags: walk the smallest tag index and check the others by position.
  local driver, smallest = 1, nil
  for t = 1, #item.tags do
    local n = redis.call('XLEN', tag_prefix .. item.tags[t])
    if smallest == nil or n < smallest then
      driver, smallest = t, n
    end
  end
  if smallest == 0 then
    return out
  end
  local wanted_types = nil
  if #item.types > 0 then
    wanted_types = {}
    for t = 1, #item.types do
      wanted_types[item.types[t]] = true
    end
  end
  local cursor = from
  while #out < want do
    local entries = redis.call('XRANGE', tag_prefix .. item.tags[driver], cursor, '+', 'COUNT', 100)
    for k = 1, #entries do
      local id, fields = entries[k][1], entries[k][2]
      local ok = true
      if wanted_types ~= nil then
        ok = wanted_types[fields[2]] == true
      end
      if ok then
        for t = 1, #item.tags do
          if t ~= driver and ok then
            ok = #redis.call('XRANGE', tag_prefix .. item.tags[t], id, id) > 0
          end
        end
      end
      if ok then
        out[#out + 1] = tonumber(string.match(id, '^(%d+)'))
        if #out >= want then
          break
        end
      end
    end
    if #entries < 100 then
      break
    end
    cursor = int(tonumber(string.match(entries[#entries][1], '^(%d+)')) + 1) .. '-0'
  end
  return out
end

-- The first `want` events (global entries) after `after` matching the query.
local function condition_matches(condition, want, all_key, type_prefix, tag_prefix)
  if #condition.items == 0 then
    return redis.call('XRANGE', all_key, int(condition.after + 1) .. '-0', '+', 'COUNT', want)
  end
  local seen, positions = {}, {}
  for i = 1, #condition.items do
    local found = item_positions(condition.items[i], condition.after, want, type_prefix, tag_prefix)
    for k = 1, #found do
      if not seen[found[k]] then
        seen[found[k]] = true
        positions[#positions + 1] = found[k]
      end
    end
  end
  table.sort(positions)
  local entries = {}
  for k = 1, math.min(#positions, want) do
    local id = int(positions[k]) .. '-0'
    local e = redis.call('XRANGE', all_key, id, id)
    if #e > 0 then
      entries[#entries + 1] = e[1]
    end
  end
  return entries
end

-- Writes every copy of one event: its stream entry `<version>-0`, its global entry
-- `<position>-0`, its type index entry and its tag index entries (what appends and imports
-- write alike; the caller has checked everything, so nothing here may fail).
local function write_event(stream_key, all_key, type_prefix, tag_prefix, stream, version,
    position, id, event_type, data, metadata, tags, content_type, recorded_at)
  local entry_id = position .. '-0'
  if content_type == '' then
    -- JSON: no content_type field, as every entry written before library version 5.
    redis.call('XADD', stream_key, version .. '-0',
      'position', position, 'id', id, 'type', event_type, 'data', data,
      'metadata', metadata, 'tags', tags, 'recorded_at', recorded_at)
    redis.call('XADD', all_key, entry_id,
      'stream', stream, 'version', version, 'id', id, 'type', event_type,
      'data', data, 'metadata', metadata, 'tags', tags, 'recorded_at', recorded_at)
  else
    redis.call('XADD', stream_key, version .. '-0',
      'position', position, 'id', id, 'type', event_type, 'data', data,
      'metadata', metadata, 'tags', tags, 'recorded_at', recorded_at,
      'content_type', content_type)
    redis.call('XADD', all_key, entry_id,
      'stream', stream, 'version', version, 'id', id, 'type', event_type,
      'data', data, 'metadata', metadata, 'tags', tags, 'recorded_at', recorded_at,
      'content_type', content_type)
  end
  redis.call('XADD', type_prefix .. event_type, entry_id, 's', stream)
  -- An event may list a tag twice; it is indexed once (a second XADD at the same id
  -- would fail half way through the write).
  if tags ~= '' then
    local indexed = {}
    for tag in string.gmatch(tags, '[^,]+') do
      if not indexed[tag] then
        indexed[tag] = true
        redis.call('XADD', tag_prefix .. tag, entry_id, 'type', event_type)
      end
    end
  end
end

-- KEYS: 1 global stream, 2 head counter, 3 stream index (sorted set), 4 stream heads
--       (hash stream -> "<version> <last position>"), 5 lifecycles (hash, see
--       lifecycle_of), then per part: stream, ids (hash
--       event id -> version), types (hash type -> last version with it); then every type
--       and tag index key the call reads or writes (declared for Redis Cluster; their
--       names are built here from the prefixes, the same way).
-- ARGV: concurrent events max, type index prefix, tag index prefix,
--       condition (0|1), after, n items, per item: n types, types..., n tags, tags...;
--       n parts, per part: stream, expected kind (exact|no_stream|exists|any), expected
--       version, rebase (0|1), n rebase_unless types, the types..., n events, then per
--       event: id, type, data, metadata, tags (comma-joined), content type ('' for JSON)
--
-- Reply (first element says which):
--   {'written', first_position, last_position, epoch, recorded_at, parts} with per part
--      {first_version, last_version, first_position, last_position, rebased (0|1),
--       rebased_from}: a rebased part went over versions rebased_from + 1 .. first_version - 1
--   {'duplicate', parts} with per part {first_version, last_version, first_position,
--      last_position}
--   {'partial', part number, existing ids...}
--   {'conflicts', epoch, conflicts} with per failing part {part number, actual,
--      truncated (0|1), concurrent entries (the first concurrent-events-max)}
--   {'condition', matching global entries (the first concurrent-events-max)}
--   {'deleted', part number}: that part's stream is tombstoned; nothing was written
local function append(keys, args)
  local all_key, head_key, index_key, heads_key = keys[1], keys[2], keys[3], keys[4]
  local lifecycle_key = keys[5]
  local type_prefix, tag_prefix = args[2], args[3]
  local has_condition = args[4] == '1'
  local condition = {items = {}}
  -- Arguments are read in place by index (no closures or copies per call: this runs for
  -- every append).
  local at = 6
  local n_items = count(args[at])
  at = at + 1
  for i = 1, n_items do
    local n_types = count(args[at])
    local types = arg_list(args, at + 1, n_types)
    at = at + 1 + n_types
    local n_tags = count(args[at])
    local tags = arg_list(args, at + 1, n_tags)
    at = at + 1 + n_tags
    condition.items[i] = {types = types, tags = tags}
  end
  local n_parts = count(args[at])
  at = at + 1
  local parts = {}
  for p = 1, n_parts do
    local k = 5 + (p - 1) * 3
    local n_unless = count(args[at + 4])
    local part = {
      stream_key = keys[k + 1], ids_key = keys[k + 2], types_key = keys[k + 3],
      stream = args[at], kind = args[at + 1], expected = tonumber(args[at + 2]),
      rebase = args[at + 3] == '1', unless = arg_list(args, at + 5, n_unless),
    }
    at = at + 5 + n_unless
    local n_events = count(args[at])
    at = at + 1
    -- The events stay in ARGV: event k's id, type, data, metadata, tags and content type
    -- are at part.at + EVENT_ARGS * (k - 1) + 0..5.
    part.n, part.at, part.ids = n_events, at, {}
    for e = 1, n_events do
      part.ids[e] = args[at + EVENT_ARGS * (e - 1)]
    end
    at = at + EVENT_ARGS * n_events
    parts[p] = part
  end

  -- Every check before the first write. A tombstoned stream refuses everything, even a
  -- repeated append.
  for p = 1, n_parts do
    parts[p].lc = lifecycle_of(lifecycle_key, parts[p].stream)
    if parts[p].lc ~= nil and parts[p].lc.tombstoned then
      return {'deleted', p}
    end
  end
  local plans = {}
  for p = 1, n_parts do
    plans[p] = plan_part(parts[p])
  end
  for p = 1, n_parts do
    if plans[p].kind == 'partial' then
      local reply = {'partial', p}
      for k = 1, #plans[p].ids do
        reply[#reply + 1] = plans[p].ids[k]
      end
      return reply
    end
  end
  local duplicates = 0
  for p = 1, n_parts do
    if plans[p].kind == 'duplicate' then
      duplicates = duplicates + 1
    end
  end
  if duplicates == n_parts then
    local out = {}
    for p = 1, n_parts do
      local first, last = plans[p].first, plans[p].last
      out[p] = {first, last, position_of(parts[p].stream_key, first), position_of(parts[p].stream_key, last)}
    end
    return {'duplicate', out}
  end
  if duplicates > 0 then
    -- Some parts stored, others not: the ids were reused for another append.
    for p = 1, n_parts do
      if plans[p].kind == 'duplicate' then
        local reply = {'partial', p}
        for k = 1, parts[p].n do
          reply[#reply + 1] = parts[p].ids[k]
        end
        return reply
      end
    end
  end
  local conflicts = {}
  for p = 1, n_parts do
    local plan = plans[p]
    if plan.kind == 'conflict' then
      local concurrent_max = tonumber(args[1])
      -- A conflict carries its concurrent events (the first concurrent-events-max of
      -- versions first..actual) in this reply, whoever wrote them: the caller decides on
      -- them, and one round trip is the promise. (A rebase lists them from the client's
      -- cache instead; see docs/design/redis-layout.md.)
      local truncated, entries = 0, {}
      if plan.first ~= nil and concurrent_max > 0 then
        entries = redis.call('XRANGE', parts[p].stream_key, int(plan.first) .. '-0', '+', 'COUNT', concurrent_max)
        if plan.first + #entries <= plan.actual then
          truncated = 1
        end
      end
      conflicts[#conflicts + 1] = {p, plan.actual, truncated, entries}
    end
  end
  if #conflicts > 0 then
    local head = tonumber(redis.call('GET', head_key) or '0')
    return {'conflicts', current_epoch(head_key, head), conflicts}
  end
  if has_condition then
    condition.after = tonumber(args[5])
    local matching = condition_matches(condition, tonumber(args[1]), all_key, type_prefix, tag_prefix)
    if #matching > 0 then
      return {'condition', matching}
    end
  end

  -- Write: every check has passed, nothing below can fail.
  local time = redis.call('TIME')
  -- Milliseconds as text, without numbers: TIME's microseconds (0-999999, unpadded) padded
  -- to six digits, of which the first three follow the seconds.
  local recorded_at = time[1] .. string.sub('00000' .. time[2], -6, -4)
  local n_total = 0
  for p = 1, n_parts do
    n_total = n_total + parts[p].n
  end
  local last_position = redis.call('INCRBY', head_key, n_total)
  local head = last_position - n_total
  local written_epoch = current_epoch(head_key, head)
  heads_written[head_key] = last_position
  local first_position = head + 1
  local out = {}
  for p = 1, n_parts do
    local part, plan = parts[p], plans[p]
    local actual = plan.actual
    local part_first = head + 1
    -- One HSET each for the ids and the types of the whole part: field k of the ids, the
    -- last version of each type (a type listed twice keeps its later version).
    local id_versions, type_versions = {}, {}
    -- The part's last version and position as text, for its stream head (a part has at
    -- least one event; the client refuses an empty append).
    local version, position
    for k = 1, part.n do
      local a = part.at + EVENT_ARGS * (k - 1)
      local id, event_type, tags, content_type = args[a], args[a + 1], args[a + 4], args[a + 5]
      version = int(actual + k)
      head = head + 1
      position = int(head)
      write_event(part.stream_key, all_key, type_prefix, tag_prefix, part.stream, version,
        position, id, event_type, args[a + 2], args[a + 3], tags, content_type, recorded_at)
      id_versions[#id_versions + 1] = id
      id_versions[#id_versions + 1] = version
      type_versions[#type_versions + 1] = event_type
      type_versions[#type_versions + 1] = version
    end
    if actual < HASH_TABLE_AT and actual + part.n >= HASH_TABLE_AT then
      id_versions[#id_versions + 1] = HASH_TABLE_FIELD
      id_versions[#id_versions + 1] = '0'
    end
    hset_all(part.ids_key, id_versions)
    hset_all(part.types_key, type_versions)
    local last_version = actual + part.n
    local head_text = (version or int(actual)) .. ' ' .. (position or int(head))
    if actual == 0 then
      -- A new stream (version 0 is no stream): only then is it indexed by name.
      redis.call('HSET', heads_key, part.stream, head_text, HASH_TABLE_FIELD, '0')
      redis.call('ZADD', index_key, 0, part.stream)
    else
      redis.call('HSET', heads_key, part.stream, head_text)
    end
    local rebased, rebased_from = 0, 0
    if plan.rebased_from ~= nil then
      rebased, rebased_from = 1, plan.rebased_from
    end
    out[p] = {actual + 1, last_version, part_first, head, rebased, rebased_from}
  end
  return {'written', first_position, last_position, written_epoch, recorded_at, out}
end

-- KEYS: 1 global log, 2 head counter, 3 stream index, 4 stream heads, 5 lifecycles; then
-- per stream of the batch: its stream, ids and types keys; then every type and tag index key
-- the events name.
-- ARGV: 1 type index prefix, 2 tag index prefix, 3 number of streams; per stream: name,
-- first version; then per event, in position order: stream number (1-based), position,
-- version, id, type, data, metadata, tags (comma-separated), content type ('' for JSON),
-- recorded_at (milliseconds).
-- Writes events recorded by another store as they are (library version 10; EventStore::
-- import, what `concord copy` writes with). The batch was checked alone by the client
-- (concord_core::plan_import: positions grow, each stream's versions follow each other);
-- here, mirroring plan_stream_import, against what is stored, before the first write:
-- positions above the head, each stream going on from its last version (or a stream
-- without events starting anywhere: the versions before are recorded as erased), no
-- tombstone, no id its stream holds. Reply: {'ok'}, {'head', head}, {'tombstoned', stream},
-- {'version', stream, last}, {'id', stream, id}.
local IMPORT_EVENT_ARGS = 10

local function import(keys, args)
  local all_key, head_key, index_key, heads_key, lifecycle_key =
    keys[1], keys[2], keys[3], keys[4], keys[5]
  local type_prefix, tag_prefix = args[1], args[2]
  local n_streams = count(args[3])
  local streams = {}
  local at = 4
  for s = 1, n_streams do
    local k = 5 + (s - 1) * 3
    streams[s] = {name = args[at], first = tonumber(args[at + 1]), stream_key = keys[k + 1],
      ids_key = keys[k + 2], types_key = keys[k + 3], id_versions = {}, type_versions = {}}
    at = at + 2
  end
  local n_events = (#args - at + 1) / IMPORT_EVENT_ARGS
  local head = tonumber(redis.call('GET', head_key) or '0')
  if n_events < 1 or tonumber(args[at + 1]) <= head then
    return {'head', head}
  end
  for s = 1, n_streams do
    local st = streams[s]
    local lc = lifecycle_of(lifecycle_key, st.name)
    if lc ~= nil and lc.tombstoned then
      return {'tombstoned', st.name}
    end
    st.lc = lc
    st.last = stream_version(st.stream_key, lc)
    if st.last == 0 then
      if st.first > 1 then
        st.erase_through = st.first - 1
      end
    elseif st.first ~= st.last + 1 then
      return {'version', st.name, st.last}
    end
  end
  for e = 0, n_events - 1 do
    local a = at + e * IMPORT_EVENT_ARGS
    local st = streams[tonumber(args[a])]
    if redis.call('HEXISTS', st.ids_key, args[a + 3]) == 1 then
      return {'id', st.name, args[a + 3]}
    end
  end
  -- Write: every check has passed, nothing below can fail.
  local last_position
  for e = 0, n_events - 1 do
    local a = at + e * IMPORT_EVENT_ARGS
    local st = streams[tonumber(args[a])]
    local position, version, id, event_type = args[a + 1], args[a + 2], args[a + 3], args[a + 4]
    local data, metadata, tags, content_type, recorded_at =
      args[a + 5], args[a + 6], args[a + 7], args[a + 8], args[a + 9]
    write_event(st.stream_key, all_key, type_prefix, tag_prefix, st.name, version, position,
      id, event_type, data, metadata, tags, content_type, recorded_at)
    st.id_versions[#st.id_versions + 1] = id
    st.id_versions[#st.id_versions + 1] = version
    st.type_versions[#st.type_versions + 1] = event_type
    st.type_versions[#st.type_versions + 1] = version
    st.version, st.position = version, position
    last_position = position
  end
  for s = 1, n_streams do
    local st = streams[s]
    local last_version = tonumber(st.version)
    if st.last < HASH_TABLE_AT and last_version >= HASH_TABLE_AT then
      st.id_versions[#st.id_versions + 1] = HASH_TABLE_FIELD
      st.id_versions[#st.id_versions + 1] = '0'
    end
    hset_all(st.ids_key, st.id_versions)
    hset_all(st.types_key, st.type_versions)
    local head_text = st.version .. ' ' .. st.position
    if st.last == 0 then
      redis.call('HSET', heads_key, st.name, head_text, HASH_TABLE_FIELD, '0')
      redis.call('ZADD', index_key, 0, st.name)
    else
      redis.call('HSET', heads_key, st.name, head_text)
    end
    if st.erase_through ~= nil then
      local lc = st.lc or {deleted = 0, tombstoned = false, max_count = 0, max_age = 0,
        truncate = 0, erased = 0}
      lc.erased = st.erase_through
      redis.call('HSET', lifecycle_key, st.name, lifecycle_text(lc))
    end
  end
  redis.call('SET', head_key, last_position)
  return {'ok'}
end

-- KEYS: 1 lifecycles, 2 the stream, 3 stream heads, 4 stream index.
-- ARGV: stream, last version, deleted through, tombstoned (0|1), max count, max age in
-- seconds, truncate before (0: no such setting).
-- Writes a stream's past as another store keeps it (library version 11; EventStore::
-- import_stream_past), mirroring concord_core::plan_past_import (the client checked the
-- past alone): a tombstoned stream takes only a tombstoned past; a stream with versions
-- keeps its last one; a stream without any takes the past's, every version erased (its
-- head says so, as for a stream a scavenge erased whole); a delete never goes back.
-- Reply: {'ok'}, {'tombstoned'}, {'version', last}.
local function import_past(keys, args)
  local lifecycle_key, stream_key, heads_key, index_key = keys[1], keys[2], keys[3], keys[4]
  local stream, past_last, deleted = args[1], tonumber(args[2]), tonumber(args[3])
  local tombstoned = args[4] == '1'
  local lc = lifecycle_of(lifecycle_key, stream)
  if lc ~= nil and lc.tombstoned then
    if tombstoned then
      return {'ok'}
    end
    return {'tombstoned'}
  end
  local last = stream_version(stream_key, lc)
  lc = lc or {deleted = 0, tombstoned = false, max_count = 0, max_age = 0, truncate = 0, erased = 0}
  if last ~= past_last then
    if last ~= 0 then
      return {'version', last}
    end
    lc.erased = past_last
    redis.call('HSET', heads_key, stream, int(past_last) .. ' 0', HASH_TABLE_FIELD, '0')
    redis.call('ZADD', index_key, 0, stream)
  end
  if deleted > lc.deleted then
    lc.deleted = deleted
  end
  lc.tombstoned = tombstoned
  lc.max_count, lc.max_age, lc.truncate = tonumber(args[5]), tonumber(args[6]), tonumber(args[7])
  redis.call('HSET', lifecycle_key, stream, lifecycle_text(lc))
  return {'ok'}
end

-- KEYS: 1 the head. ARGV: the head to raise it to.
-- Raises the head over positions without an event (library version 11; EventStore::
-- import_head); the global stream's next entry id only has to be above its last one.
-- Reply: {'ok'} or {'head', head} when the head is above.
local function import_head(keys, args)
  local head = tonumber(redis.call('GET', keys[1]) or '0')
  local to = tonumber(args[1])
  if to < head then
    return {'head', head}
  end
  if to > head then
    redis.call('SET', keys[1], args[1])
  end
  return {'ok'}
end

-- KEYS: 1 lifecycles, 2 the stream, 3 stream heads.
-- ARGV: stream, mode (soft|tombstone), expected version (-1: none), concurrent events max.
-- Mirrors concord_core::plan_delete. Reply: {'ok'}, {'not_found'}, {'tombstoned'}, or
--   {'conflict', actual, truncated (0|1), concurrent entries}.
local function delete(keys, args)
  local lifecycle_key, stream_key = keys[1], keys[2]
  local stream, mode, expected = args[1], args[2], tonumber(args[3])
  local lc = lifecycle_of(lifecycle_key, stream)
  if lc ~= nil and lc.tombstoned then
    return {'tombstoned'}
  end
  local last = stream_version(stream_key, lc)
  local visible = visible_version(lc, last)
  -- A soft delete needs a visible event, a tombstone any event ever written;
  -- 'tombstone_name' (KurrentDB's tombstone) takes a stream that never had one.
  if (mode == 'soft' and visible == 0) or (mode == 'tombstone' and last == 0) then
    return {'not_found'}
  end
  if expected >= 0 and expected ~= visible then
    local entries, truncated = {}, 0
    if expected < visible then
      local first = math.max(expected + 1, first_kept(lc, last))
      local max = tonumber(args[4])
      entries = redis.call('XRANGE', stream_key, int(first) .. '-0', '+', 'COUNT', max)
      if first + #entries <= visible then
        truncated = 1
      end
    end
    return {'conflict', visible, truncated, entries}
  end
  lc = lc or {deleted = 0, tombstoned = false, max_count = 0, max_age = 0, truncate = 0, erased = 0}
  lc.deleted = last
  if mode ~= 'soft' then
    lc.tombstoned = true
  end
  redis.call('HSET', lifecycle_key, stream, lifecycle_text(lc))
  return {'ok'}
end

-- KEYS: 1 lifecycles. ARGV: stream, max_count, max_age_seconds, truncate_before (0: none).
-- Reply: {'ok'} or {'tombstoned'}.
-- Changes a stream's retention settings. Each setting's argument is 'keep' (the stored
-- setting stays: the merge happens here, atomically, so a concurrent change of another
-- setting is not lost), 0 (removed) or the new value. Answers the settings now stored.
local function set_metadata(keys, args)
  local lifecycle_key, stream = keys[1], args[1]
  local lc = lifecycle_of(lifecycle_key, stream)
  if lc ~= nil and lc.tombstoned then
    return {'tombstoned'}
  end
  lc = lc or {deleted = 0, tombstoned = false, max_count = 0, max_age = 0, truncate = 0, erased = 0}
  local function change(arg, stored)
    if arg == 'keep' then
      return stored
    end
    return tonumber(arg)
  end
  lc.max_count = change(args[2], lc.max_count)
  lc.max_age = change(args[3], lc.max_age)
  lc.truncate = change(args[4], lc.truncate)
  redis.call('HSET', lifecycle_key, stream, lifecycle_text(lc))
  return {'ok', lc.max_count, lc.max_age, lc.truncate}
end

-- Removes one event's every copy: its stream entry, its global entry, its type and tag
-- index entries (an index left empty is deleted with its key, whose name holds the type
-- or tag) and its id. `touched` collects the keys that keep entries, whose nodes still
-- hold the deleted bytes until compact rewrites them.
local function erase_entry(entry, stream_key, ids_key, all_key, type_prefix, tag_prefix, touched,
                           pending_key)
  local version_id, fields = entry[1], entry[2]
  local f = {}
  for i = 1, #fields, 2 do
    f[fields[i]] = fields[i + 1]
  end
  local position_id = f['position'] .. '-0'
  local function remove(key, id)
    redis.call('XDEL', key, id)
    if redis.call('XLEN', key) == 0 then
      redis.call('DEL', key)
      redis.call('SREM', pending_key, key)
      touched[key] = nil
    else
      touched[key] = true
    end
  end
  remove(all_key, position_id)
  remove(type_prefix .. f['type'], position_id)
  if f['tags'] ~= nil and f['tags'] ~= '' then
    for tag in string.gmatch(f['tags'], '[^,]+') do
      if redis.call('EXISTS', tag_prefix .. tag) == 1 then
        remove(tag_prefix .. tag, position_id)
      end
    end
  end
  redis.call('HDEL', ids_key, f['id'])
  remove(stream_key, version_id)
end

-- KEYS: 1 lifecycles, 2 the stream, 3 its ids, 4 global stream, 5 the keys to compact.
-- ARGV: stream, now (ms), most events to erase, type index prefix, tag index prefix.
-- Erases the next events of the stream that reads no longer show (a prefix: deleted,
-- tombstoned, before truncate_before, beyond max_count, older than max_age) and moves
-- erased_through. Every key it deleted entries from joins the set of keys to compact in
-- the same call, so a scavenge cut short after it (a killed client) leaves them for the
-- next one: a later call finds nothing more to erase there and would not name them.
-- Reply: {events erased, done (0|1), keys to compact...}.
local function scavenge(keys, args)
  local lifecycle_key, stream_key, ids_key, all_key = keys[1], keys[2], keys[3], keys[4]
  local pending_key = keys[5]
  local stream, now, chunk = args[1], tonumber(args[2]), tonumber(args[3])
  local type_prefix, tag_prefix = args[4], args[5]
  local lc = lifecycle_of(lifecycle_key, stream)
  if lc == nil then
    return {0, 1}
  end
  local last = stream_version(stream_key, lc)
  local target = first_kept(lc, last)
  if lc.tombstoned then
    target = last + 1
  end
  local cutoff = nil
  if lc.max_age > 0 and not lc.tombstoned then
    cutoff = now - lc.max_age * 1000
  end
  local entries = redis.call('XRANGE', stream_key, '-', '+', 'COUNT', chunk)
  local touched, erased, done = {}, 0, 1
  for k = 1, #entries do
    local v = tonumber(string.match(entries[k][1], '^(%d+)'))
    local old = false
    if v >= target and cutoff ~= nil then
      local fields = entries[k][2]
      for i = 1, #fields, 2 do
        if fields[i] == 'recorded_at' then
          old = tonumber(fields[i + 1]) <= cutoff
        end
      end
    end
    if v >= target and not old then
      break
    end
    erase_entry(entries[k], stream_key, ids_key, all_key, type_prefix, tag_prefix, touched,
                pending_key)
    lc.erased = v
    erased = erased + 1
  end
  if erased == chunk then
    done = 0
  end
  if erased > 0 then
    redis.call('HSET', lifecycle_key, stream, lifecycle_text(lc))
  end
  local reply = {erased, done}
  for key in pairs(touched) do
    redis.call('SADD', pending_key, key)
    reply[#reply + 1] = key
  end
  return reply
end

-- KEYS: 1 a stream to rewrite, 2 a scratch key, 3 the keys to compact. ARGV: cursor ('-'
-- to start, else the last entry id copied), most entries to copy.
-- XDEL only flags an entry: its bytes stay in its node until every entry of the node is
-- deleted. So a scavenge rewrites each stream it deleted from: entries are copied, in
-- chunks, to the scratch key; the call that copies the last ones (appends meanwhile
-- included) renames the copy over the original atomically and takes the key out of the
-- keys to compact. Reply: {'more', cursor} or {'done'}.
local function compact(keys, args)
  local key, scratch, pending_key = keys[1], keys[2], keys[3]
  local cursor, count = args[1], tonumber(args[2])
  if cursor == '-' then
    redis.call('DEL', scratch)
  else
    cursor = '(' .. cursor
  end
  local entries = redis.call('XRANGE', key, cursor, '+', 'COUNT', count)
  for k = 1, #entries do
    redis.call('XADD', scratch, entries[k][1], unpack(entries[k][2]))
  end
  if #entries < count then
    if redis.call('EXISTS', scratch) == 1 then
      redis.call('RENAME', scratch, key)
    else
      redis.call('DEL', key)
    end
    redis.call('SREM', pending_key, key)
    return {'done'}
  end
  return {'more', entries[#entries][1]}
end

local function version()
  return LIBRARY_VERSION
end

redis.register_function('concord_append_v7', append)
redis.register_function('concord_delete_v7', delete)
redis.register_function('concord_metadata_v7', set_metadata)
redis.register_function('concord_scavenge_v7', scavenge)
redis.register_function('concord_compact_v7', compact)
redis.register_function('concord_import_v10', import)
redis.register_function('concord_import_past_v11', import_past)
redis.register_function('concord_import_head_v11', import_head)
redis.register_function{function_name = 'concord_version', callback = version, flags = {'no-writes'}}
