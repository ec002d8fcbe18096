-- The work-equivalent limit of a conditional append on Redis (BENCHMARKS.md, issue 6):
-- read the stream's version, compare it with the expected one, XADD the stream entry,
-- INCR the global position and XADD the global entry. Nothing else: no idempotency check,
-- no type index, no limits. Driven by redis-benchmark from bench/run.sh:
--   EVALSHA <sha> 3 <stream key> <global key> <head key> <expected version> <type> <data>
local version = redis.call('XLEN', KEYS[1])
if version ~= tonumber(ARGV[1]) then
  -- A conflict is an answer, not an error (redis-benchmark stops at errors; its random
  -- keys collide a few times in 200 000 requests).
  return {'conflict', version}
end
redis.call('XADD', KEYS[1], '*', 'type', ARGV[2], 'data', ARGV[3])
local position = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[2], '*', 'stream', KEYS[1], 'position', position)
return position
