-- Admission: every limit checked, and only if all pass, every counter moved. One EVALSHA.
--
-- KEYS: every key it touches, named by metering.limits.keys.script_keys: 1 in-flight slots,
--       2-5 the user's rpm log and tpm log, amounts, sum; 6-9 the same for the key;
--       10-13 rpd tpd rpmo tpmo counters; 14 the organization's admission journal (hash),
--       15 its due times; 16-19 the key's own rpd tpd rpmo tpmo counters (its budgets).
--       All 19 carry the organization's hash tag {o<id>}: one Cluster slot.
-- ARGV: 1 now_ms ('' = Redis server TIME), 2 member (unique per admission), 3 reserve tokens,
--       4 lease_ms (in-flight slot deadline), 5 window_ms, 6 day, 7 month,
--       8 day expire-at (s), 9 month expire-at (s),
--       10..18 limits p_rpm k_rpm p_tpm k_tpm rpd tpd rpmo tpmo conc (-1 = unlimited),
--       19 dry ('1': read only, for the status page),
--       20 journal: the usage record as known at admission ('' = none), kept until settle so
--          a request whose process died is still recorded (metering.recording reconciles)
--       21..24 the key's budgets k_rpd k_tpd k_rpmo k_tpmo (-1 = none)
--
-- Sliding logs: a request (or its token reservation) counts from its admission time t while
-- t > now - window, so any window-long interval holds at most `limit` admissions.
-- Returns {admitted, now_ms, inflight, failed (csv),
--          then for each window p_rpm k_rpm p_tpm k_tpm: used, reset_ms, retry_ms,
--          then rpd tpd rpmo tpmo used, then k_rpd k_tpd k_rpmo k_tpmo used}

local K = {
  inflight = KEYS[1],
  p_rpm = KEYS[2], p_tpm = KEYS[3], p_tpm_t = KEYS[4], p_tpm_s = KEYS[5],
  k_rpm = KEYS[6], k_tpm = KEYS[7], k_tpm_t = KEYS[8], k_tpm_s = KEYS[9],
  rpd = KEYS[10], tpd = KEYS[11], rpmo = KEYS[12], tpmo = KEYS[13],
  journal = KEYS[14], due = KEYS[15],
  k_rpd = KEYS[16], k_tpd = KEYS[17], k_rpmo = KEYS[18], k_tpmo = KEYS[19],
}
local now = tonumber(ARGV[1])
if not now then
  -- One clock for every web process: their own clocks may drift apart, the server's is one.
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local member = ARGV[2]
local reserve = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local W = tonumber(ARGV[5])
local day, month = ARGV[6], ARGV[7]
local day_exp, month_exp = tonumber(ARGV[8]), tonumber(ARGV[9])
-- (tables are built once per call and reused below: each constructor is work and garbage)
local lim = {
  p_rpm = tonumber(ARGV[10]), k_rpm = tonumber(ARGV[11]), p_tpm = tonumber(ARGV[12]),
  k_tpm = tonumber(ARGV[13]), rpd = tonumber(ARGV[14]), tpd = tonumber(ARGV[15]),
  rpmo = tonumber(ARGV[16]), tpmo = tonumber(ARGV[17]), conc = tonumber(ARGV[18]),
  k_rpd = tonumber(ARGV[21]) or -1, k_tpd = tonumber(ARGV[22]) or -1,
  k_rpmo = tonumber(ARGV[23]) or -1, k_tpmo = tonumber(ARGV[24]) or -1,
}
local RPM, TPM = {'p_rpm', 'k_rpm'}, {'p_tpm', 'k_tpm'}
local WINDOWS = {'p_rpm', 'k_rpm', 'p_tpm', 'k_tpm'}
local dry = ARGV[19] == '1'
local cutoff = now - W
local live = '(' .. cutoff

local used, reset, retry, failed = {}, {}, {}, {}
local gones = {}  -- token windows: the tokens of the entries that expired, not yet taken off

local function newest_reset(z)
  local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  if last[2] and tonumber(last[2]) > cutoff then return tonumber(last[2]) + W - now end
  return 0
end

local function requests_window(n)
  local z = K[n]
  local count
  if dry then
    count = redis.call('ZCOUNT', z, live, '+inf')
  else
    -- what is left after the expired entries are dropped is the live ones
    redis.call('ZREMRANGEBYSCORE', z, '-inf', cutoff)
    count = redis.call('ZCARD', z)
  end
  used[n], retry[n] = count, 0
  if count >= lim[n] then
    -- it fits again when the (count - limit + 1)-th oldest admission leaves the window
    local e = redis.call('ZRANGEBYSCORE', z, live, '+inf', 'WITHSCORES', 'LIMIT', count - lim[n], 1)
    retry[n] = e[2] and (tonumber(e[2]) + W - now) or W  -- a limit of 0: never frees
    failed[#failed + 1] = n
  end
end

local function tokens_window(n)
  local z, h, s = K[n], K[n .. '_t'], K[n .. '_s']
  local total = 0
  if dry then
    local members = redis.call('ZRANGEBYSCORE', z, live, '+inf')
    for _, m in ipairs(members) do total = total + (tonumber(redis.call('HGET', h, m)) or 0) end
  else
    -- a running sum, so an admission costs O(expired) and not O(requests in the window)
    local expired = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff)
    local gone = 0
    if #expired > 0 then
      for i = 1, #expired, 1000 do  -- (unpack's stack is bounded)
        local part = {unpack(expired, i, math.min(i + 999, #expired))}
        for _, v in ipairs(redis.call('HMGET', h, unpack(part))) do
          gone = gone + (tonumber(v) or 0)
        end
        redis.call('HDEL', h, unpack(part))
      end
      redis.call('ZREMRANGEBYSCORE', z, '-inf', cutoff)
    end
    -- what left is taken off the sum once, with the reservation if admitted (below)
    gones[n] = gone
    total = math.max(0, (tonumber(redis.call('GET', s)) or 0) - gone)
  end
  used[n], retry[n] = total, 0
  if total >= lim[n] or total + reserve > lim[n] then
    failed[#failed + 1] = n
    if reserve > lim[n] then
      retry[n] = -1  -- never fits
    else
      local need, freed = total + reserve - lim[n], 0
      local entries = redis.call('ZRANGEBYSCORE', z, live, '+inf', 'WITHSCORES')
      retry[n] = W
      for i = 1, #entries, 2 do
        freed = freed + (tonumber(redis.call('HGET', h, entries[i])) or 0)
        if freed >= need then
          retry[n] = tonumber(entries[i + 1]) + W - now
          break
        end
      end
    end
  end
end

local cost = {
  rpd = 1, tpd = reserve, rpmo = 1, tpmo = reserve,
  k_rpd = 1, k_tpd = reserve, k_rpmo = 1, k_tpmo = reserve,
}
local period_names = {'rpd', 'tpd', 'rpmo', 'tpmo', 'k_rpd', 'k_tpd', 'k_rpmo', 'k_tpmo'}
local is_day = {rpd = true, tpd = true, k_rpd = true, k_tpd = true}

-- in-flight slots: a sorted set of admissions scored by a deadline, so a slot whose process
-- died without settling frees itself when its lease ends
local inflight_key = K.inflight
local inflight = 0
if lim.conc >= 0 then
  if dry then
    inflight = redis.call('ZCOUNT', inflight_key, '(' .. now, '+inf')
  else
    redis.call('ZREMRANGEBYSCORE', inflight_key, '-inf', now)
    inflight = redis.call('ZCARD', inflight_key)
  end
  if inflight >= lim.conc then failed[#failed + 1] = 'conc' end
end
for _, n in ipairs(RPM) do if lim[n] >= 0 then requests_window(n) end end
for _, n in ipairs(TPM) do if lim[n] >= 0 then tokens_window(n) end end
-- one read of the eight counters; an absent one (false) is new: it gets its expiry when it
-- is first counted (below), and every later writer finds it there
local current = redis.call('MGET', K.rpd, K.tpd, K.rpmo, K.tpmo, K.k_rpd, K.k_tpd, K.k_rpmo, K.k_tpmo)
for i, n in ipairs(period_names) do
  local v = math.max(0, tonumber(current[i]) or 0)
  used[n] = v
  if lim[n] >= 0 and (v >= lim[n] or v + cost[n] > lim[n]) then failed[#failed + 1] = n end
end

local admitted = (#failed == 0) and not dry
if admitted then
  local ttl = W + 1000
  if lim.conc >= 0 then
    redis.call('ZADD', inflight_key, now + lease, member)
    redis.call('PEXPIRE', inflight_key, lease + 1000)
    inflight = inflight + 1
  end
  for _, n in ipairs(RPM) do
    if lim[n] >= 0 then
      local z = K[n]
      redis.call('ZADD', z, now, member)
      redis.call('PEXPIRE', z, ttl)
      used[n], reset[n] = used[n] + 1, W
    end
  end
  for _, n in ipairs(TPM) do
    -- nothing reserved, nothing logged: a settle above zero logs its tokens when it comes
    if lim[n] >= 0 and reserve > 0 then
      local z, h, s = K[n], K[n .. '_t'], K[n .. '_s']
      redis.call('ZADD', z, now, member)
      redis.call('HSET', h, member, reserve)
      redis.call('INCRBY', s, reserve - gones[n])
      redis.call('PEXPIRE', z, ttl)
      redis.call('PEXPIRE', h, ttl)
      redis.call('PEXPIRE', s, ttl)
      used[n], reset[n] = used[n] + reserve, W
      gones[n] = 0
    end
  end
  -- day and month counters move even when unlimited: a plan change mid-month then starts
  -- from the true count, and the status page can show usage (the key's too: a budget set
  -- mid-month counts what the key already used)
  for i, n in ipairs(period_names) do
    redis.call('INCRBY', K[n], cost[n])
    if not current[i] then redis.call('EXPIREAT', K[n], is_day[n] and day_exp or month_exp) end
    used[n] = used[n] + cost[n]
  end
end
-- a token window's sum not rewritten above still loses what expired
for _, n in ipairs(TPM) do
  if gones[n] and gones[n] > 0 then redis.call('DECRBY', K[n .. '_s'], gones[n]) end
end

-- A window's reset: W after an admission it logged (set above), else when its newest entry
-- leaves it (read last: an admission that logs one needs no read).
for _, n in ipairs(WINDOWS) do
  if used[n] ~= nil and reset[n] == nil then reset[n] = newest_reset(K[n]) end
end

if admitted and ARGV[20] and ARGV[20] ~= '' then
  redis.call('HSET', K.journal, member, ARGV[20])
  redis.call('ZADD', K.due, now + lease, member)
end

local out = {admitted and 1 or 0, now, inflight, table.concat(failed, ',')}
for _, n in ipairs(WINDOWS) do
  out[#out + 1] = used[n] or 0
  out[#out + 1] = reset[n] or 0
  out[#out + 1] = retry[n] or 0
end
for _, n in ipairs(period_names) do out[#out + 1] = used[n] end
return out
