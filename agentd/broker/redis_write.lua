-- Every write of agentd's Redis broker, one atomic step each (agentd/broker/redis.py).
-- ARGV[1]: JSON parameters (op, prefix, run, thread, ...); ARGV[2]: the event's data (a DONE's
-- status); ARGV[3]: the run_done metadata of an end. Keys are built here from the prefix: one
-- Redis server, not a cluster.
local p = cjson.decode(ARGV[1])
local data = ARGV[2] or ''
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local function int(n)
  return string.format('%.0f', n)
end

local run_h, run_s, run_reg
if p.run then
  run_h = p.prefix .. 'run:' .. p.run
  run_s, run_reg = run_h .. ':events', run_h .. ':subs'
end
local th_h, th_s, th_reg
if p.thread then
  th_h = p.prefix .. 'thread:' .. p.thread
  th_s, th_reg = th_h .. ':events', th_h .. ':subs'
end

-- The newest entry of each stream, read once per call.
local newest_ids = {}
local function newest(stream)
  local id = newest_ids[stream]
  if not id then
    local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
    id = last and last[1] or '0-0'
    newest_ids[stream] = id
  end
  return id
end

-- One id for every stream an event goes to: after the newest entry of each, never before
-- Redis's clock, so ids keep increasing in every stream (across runs, processes, restarts).
local function next_id(streams)
  local ms, seq = now, 0
  for _, stream in ipairs(streams) do
    local lms, lseq = string.match(newest(stream), '^(%d+)%-(%d+)$')
    lms, lseq = tonumber(lms), tonumber(lseq)
    if lms > ms or (lms == ms and lseq >= seq) then
      ms, seq = lms, lseq + 1
    end
  end
  return int(ms) .. '-' .. int(seq)
end

-- Over a cap (events, or bytes of data), the oldest entries go until an eighth below it (so
-- the walk is paid once per eighth, not per event); the newest always stays.
local function trim(stream, hash, bytes, max_events, max_bytes)
  local n = redis.call('XLEN', stream)
  if n <= max_events and bytes <= max_bytes then
    return
  end
  local keep_n = max_events - math.floor(max_events / 8)
  local keep_b = max_bytes - math.floor(max_bytes / 8)
  local from = '-'
  while n > 1 and (n > keep_n or bytes > keep_b) do
    local page = redis.call('XRANGE', stream, from, '+', 'COUNT', 128)
    if #page == 0 then
      break
    end
    for _, entry in ipairs(page) do
      if n <= 1 or (n <= keep_n and bytes <= keep_b) then
        break
      end
      local fields = entry[2]
      for i = 1, #fields, 2 do
        if fields[i] == 'd' then
          bytes = bytes - #fields[i + 1]
          break
        end
      end
      n = n - 1
      from = '(' .. entry[1]
    end
  end
  redis.call('XTRIM', stream, 'MAXLEN', n)
  redis.call('HSET', hash, 'bytes', int(math.max(bytes, 0)))
end

-- An entry: e (name), d (data), k (1: kept for replay), p (the entry before it in this
-- stream: a reader whose position is older was trimmed past), r (the run, in a thread's).
local function add(stream, hash, id, name, value, kept, run, max_events, max_bytes)
  local prev = newest(stream)
  if run then
    redis.call('XADD', stream, id, 'e', name, 'd', value, 'k', kept, 'p', prev, 'r', run)
  else
    redis.call('XADD', stream, id, 'e', name, 'd', value, 'k', kept, 'p', prev)
  end
  newest_ids[stream] = id
  local bytes = redis.call('HINCRBY', hash, 'bytes', #value)
  trim(stream, hash, bytes, max_events, max_bytes)
end

-- Expire no sooner than ms from now.
local function extend(key, ms)
  local ttl = redis.call('PTTL', key)
  if ttl == -1 or (ttl >= 0 and ttl < ms) then
    redis.call('PEXPIRE', key, ms)
  end
end

local function open_run()
  redis.call('HSET', run_h, 'thread', p.thread, 'resumable', p.resumable and '1' or '0',
    'shown', p.names or '', 'ended', '0')
end

-- Fencing: the run's hash keeps the highest attempt that opened or wrote it; a write naming a
-- lower one comes from an attempt whose run was taken over, and is dropped. (A write naming
-- none is not fenced: the end of a run by a process that did not execute it.)
local function stale()
  if not p.attempt then
    return false
  end
  local newest = tonumber(redis.call('HGET', run_h, 'attempt') or '0')
  return p.attempt < newest
end

local function fence()
  if p.attempt then
    local newest = tonumber(redis.call('HGET', run_h, 'attempt') or '0')
    if p.attempt > newest then
      redis.call('HSET', run_h, 'attempt', int(p.attempt))
    end
  end
end

local function listened(registry)
  return redis.call('EXISTS', registry) == 1
end

if p.op == 'open' then
  if stale() then
    return 0
  end
  -- A new attempt appends to the same stream: open again, not ended.
  open_run()
  fence()
  redis.call('PEXPIRE', run_h, p.open_ttl)
  if redis.call('EXISTS', run_s) == 1 then
    redis.call('PEXPIRE', run_s, p.open_ttl)
  end
  return 1
end

if p.op == 'event' then
  if stale() then
    return 0
  end
  -- Kept events always go in; others only while some process has a subscriber.
  local to_run = p.kept or listened(run_reg)
  local to_thread = th_s ~= nil and p.shown and (p.kept or listened(th_reg))
  if not (to_run or to_thread) then
    return 0
  end
  local streams = {}
  if to_run then table.insert(streams, run_s) end
  if to_thread then table.insert(streams, th_s) end
  local id = next_id(streams)
  local kept = p.kept and '1' or '0'
  if to_run then
    if th_h and redis.call('EXISTS', run_h) == 0 then
      open_run()  -- lost (a flush): what other processes read of the run, written again
    end
    fence()
    add(run_s, run_h, id, p.name, data, kept, nil, p.max_events, p.max_bytes)
    redis.call('PEXPIRE', run_h, p.open_ttl)
    redis.call('PEXPIRE', run_s, p.open_ttl)
  end
  if to_thread then
    add(th_s, th_h, id, p.name, data, kept, p.run, p.thread_max_events, p.thread_max_bytes)
    -- open_ttl is at least the resumable TTL: never shorter than what the thread keeps.
    redis.call('PEXPIRE', th_h, p.open_ttl)
    redis.call('PEXPIRE', th_s, p.open_ttl)
  end
  return 1
end

if p.op == 'end' then
  if stale() then
    return 0
  end
  fence()
  local resumable = p.resumable
  if resumable == nil then  -- ended by a process that did not run it: what its runner wrote
    resumable = redis.call('HGET', run_h, 'resumable') == '1'
  end
  if not th_h then
    local thread = redis.call('HGET', run_h, 'thread')
    if thread then
      th_h = p.prefix .. 'thread:' .. thread
      th_s, th_reg = th_h .. ':events', th_h .. ':subs'
    end
  end
  if resumable or listened(run_reg) then
    add(run_s, run_h, next_id({run_s}), '__done__', data, resumable and '1' or '0', nil,
      p.max_events, p.max_bytes)
  end
  if redis.call('EXISTS', run_h) == 1 then
    redis.call('HSET', run_h, 'ended', '1')
  end
  -- The resumable TTL counts from the end; what is not kept stays a little for readers
  -- still catching up.
  local ttl = resumable and p.ttl or p.live_ttl
  redis.call('PEXPIRE', run_h, ttl)
  redis.call('PEXPIRE', run_s, ttl)
  if th_h then
    if listened(th_reg) then
      add(th_s, th_h, next_id({run_s, th_s}), 'metadata', ARGV[3], '0', nil,
        p.thread_max_events, p.thread_max_bytes)
    end
    -- The thread's stream holds copies of its runs' kept events: it lives as long as the
    -- longest-lived of them (replays also check each run's own key).
    local keep = tonumber(redis.call('HGET', th_h, 'keep') or '0')
    if resumable then
      keep = math.max(keep, now + p.ttl)
      redis.call('HSET', th_h, 'keep', int(keep))
    end
    if redis.call('EXISTS', th_h) == 1 then
      local at = int(math.max(keep, now + p.live_ttl))
      redis.call('PEXPIREAT', th_h, at)
      redis.call('PEXPIREAT', th_s, at)
    end
  end
  return 1
end

if p.op == 'thread' then
  -- A thread's own events are never kept: only for subscribers of the moment.
  if not listened(th_reg) then
    return 0
  end
  add(th_s, th_h, next_id({th_s}), p.name, data, '0', nil, p.thread_max_events,
    p.thread_max_bytes)
  extend(th_h, p.live_ttl)
  extend(th_s, p.live_ttl)
  return 1
end

return redis.error_reply('agentd broker: unknown op ' .. tostring(p.op))
