-- Settle: release the in-flight slot and replace the token reservation by the real count.
--
-- KEYS: as admit.lua's (metering.limits.keys.script_keys), 16-19 the key's own counters.
-- ARGV: 1 now_ms ('' = server TIME), 2 member, 3 reserved, 4 actual, 5 window_ms, 6 day,
--       7 month, 8 day expire-at (s), 9 month expire-at (s), 10 tracks (c, p, k letters)

-- the clock is read only for an overrun logged from now (below)
local function now_ms()
  local now = tonumber(ARGV[1])
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local member = ARGV[2]
local delta = tonumber(ARGV[4]) - tonumber(ARGV[3])
local W = tonumber(ARGV[5])
local day_exp, month_exp = tonumber(ARGV[8]), tonumber(ARGV[9])
local tracks = ARGV[10]

if string.find(tracks, 'c', 1, true) then redis.call('ZREM', KEYS[1], member) end
-- the request ended in a live process, which writes its own usage record
redis.call('HDEL', KEYS[14], member)
redis.call('ZREM', KEYS[15], member)

local function adjust(key, expire_at)
  if delta == 0 then return end
  local v = redis.call('INCRBY', key, delta)
  if v < 0 then
    redis.call('SET', key, 0)  -- (which drops the expiry)
  elseif v ~= delta then
    return  -- it was there: admission gave it its expiry
  end
  redis.call('EXPIREAT', key, expire_at)
end
-- the day and month the request was admitted in, even if it ends after midnight
adjust(KEYS[11], day_exp)
adjust(KEYS[13], month_exp)
-- and the key's own day and month token counters (its budgets)
adjust(KEYS[17], day_exp)
adjust(KEYS[19], month_exp)

local function tokens_window(z, h, s)
  if redis.call('HEXISTS', h, member) == 1 then
    if delta ~= 0 then
      redis.call('HINCRBY', h, member, delta)
      if redis.call('INCRBY', s, delta) < 0 then redis.call('SET', s, 0) end
    end
  elseif delta > 0 then
    -- the reservation already left the window (a long request): the overrun counts from now
    local m = member .. ':over'
    redis.call('ZADD', z, now_ms(), m)
    redis.call('HSET', h, m, delta)
    redis.call('INCRBY', s, delta)
    for _, k in ipairs({z, h, s}) do redis.call('PEXPIRE', k, W + 1000) end
  end
end
if string.find(tracks, 'p', 1, true) then tokens_window(KEYS[3], KEYS[4], KEYS[5]) end
if string.find(tracks, 'k', 1, true) then tokens_window(KEYS[7], KEYS[8], KEYS[9]) end
return 1
