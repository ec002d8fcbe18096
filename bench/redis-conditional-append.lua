-- Benchmark entry point for redis-benchmark, appended to the library source
-- (crates/concord-redis/src/concord.lua, renamed `concord_bench`) by redis-append-bench.sh.
--
-- redis-benchmark replaces each `__rand_int__` of a command with its own random number, so
-- it cannot pass matching stream, ids and types keys to `concord_append_v7`. This wrapper
-- derives all keys and arguments from one number and calls the same local `append`
-- function in-process: a conditional append (`no_stream`, one event, a new stream) with
-- exactly the work of `FCALL concord_append_v7`, plus a few string concatenations.
-- Its keys and arguments follow the layout at the top of `append` in concord.lua; the
-- Redis tests run this script against the library, so a change of that layout that is
-- not made here too fails them.
local function bench_append(_keys, args)
  local n = args[1]
  local s = 's-' .. n
  local p = '{b}:'
  return append(
    {p .. 'all', p .. 'head', p .. 'streams', p .. 'stream-heads', p .. 'lifecycle',
     p .. 'stream:' .. s, p .. 'ids:' .. s, p .. 'types:' .. s},
    {'100', p .. 'type:', p .. 'tag:', '0', '0', '0',
     '1', s, 'no_stream', '0', '0', '0', '1', 'id-' .. n, 'Deposited', '{"amount":1}', '{}', '', ''})
end

redis.register_function('concord_bench_append', bench_append)
