-- paystream's windowed counters: counts events once and reads windows, for the entities
-- of one call (one key shard). See counters.rs for the key schema.
--
-- KEYS[1]: the shard's routing key (never read or written: it names the call's slot).
-- ARGV[1]: the keys' TTL in seconds. Then, per entity run: the entity's key stem, the
-- number of items M, and M items of 4 arguments: bucket, window length in buckets (0:
-- none), event id ('': read only), amount in minor units.
-- Returns, per item in order: 1 if the event was new (else 0), the window's count and sum.
--
-- An entity's bucket b is two keys with the same TTL: <stem>c:<b>, its count, sum and t
-- as three big-endian 64-bit integers (struct: no number formatting or parsing in Lua),
-- t being when the TTLs were last set (ms, server clock); and <stem>e:<b>, the set of the
-- event ids it counted. Both TTLs are set at once, so the two keys expire together and a
-- replayed event is never counted twice.
--
-- Lua numbers are doubles, exact below 2^53 minor units: a window beyond that is an
-- error, returned after every write so that no count is left half made.
local ttl = ARGV[1]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ttl_ms = tonumber(ttl) * 1000
-- A bucket's TTLs are refreshed when it counts an event at least a 64th of the TTL after
-- their last refresh: most counts then cost no EXPIRE, and a bucket lives the TTL after
-- its last count, less up to a 64th.
local refresh_before = now - math.floor(ttl_ms / 64)
local exact = 9007199254740991
local keys_per_call = 300
local bucket_layout = '>i8i8i8'

-- Bucket numbers in key names. Lua formats a number with sprintf, slowly: each
-- hundred's prefix is formatted once, the last two digits come from a table.
local two_digits = {}
for i = 0, 99 do
  two_digits[i] = string.format('%02d', i)
end
local hundreds = {}
local function bucket_string(b)
  if b < 100 then return string.format('%d', b) end
  local hundred = math.floor(b / 100)
  local prefix = hundreds[hundred]
  if not prefix then
    prefix = string.format('%d', hundred)
    hundreds[hundred] = prefix
  end
  return prefix .. two_digits[b - hundred * 100]
end

-- Reads the counts of `buckets` into n and s (absent: 0), and into refreshed[b] when a
-- bucket's TTLs were last set.
local function load(stem, buckets, n, s, refreshed)
  local counts = stem .. 'c:'
  for from = 1, #buckets, keys_per_call do
    local to = math.min(from + keys_per_call - 1, #buckets)
    local keys = {}
    for i = from, to do
      keys[#keys + 1] = counts .. bucket_string(buckets[i])
    end
    local values = redis.call('MGET', unpack(keys))
    for i = from, to do
      local b, value = buckets[i], values[i - from + 1]
      if value then
        n[b], s[b], refreshed[b] = struct.unpack(bucket_layout, value)
      else
        n[b], s[b] = 0, 0
      end
    end
  end
end

local out, inexact = {}, false
local a = 2
while a <= #ARGV do
  local stem, items = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  -- Per bucket: count, sum, when its TTLs were refreshed (if live); the buckets this run
  -- counted in (a list of their strings, and a set).
  local n, s, refreshed, dirty, is_dirty = {}, {}, {}, {}, {}
  -- lo..hi: a range of buckets all loaded (nil: none yet). The last window computed:
  -- its buckets first..last and totals, kept up to date as the run counts (most of a
  -- run's events share a bucket, so most windows cost no loop).
  local lo, hi
  local cached_first, cached_last, cached_count, cached_sum
  for _ = 1, items do
    local b_string, window, id, amount = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2], tonumber(ARGV[a + 3])
    local b = tonumber(b_string)
    a = a + 4
    local first = b - math.max(window, 1) + 1
    if not (lo and first >= lo and b <= hi) then
      local missing = {}
      for x = first, b do
        if n[x] == nil then missing[#missing + 1] = x end
      end
      if #missing > 0 then load(stem, missing, n, s, refreshed) end
      if lo and first <= hi + 1 and b >= lo - 1 then
        lo, hi = math.min(lo, first), math.max(hi, b)
      else
        lo, hi = first, b
      end
    end
    local new = 0
    if id ~= '' and redis.call('SADD', stem .. 'e:' .. b_string, id) == 1 then
      new = 1
      n[b], s[b] = n[b] + 1, s[b] + amount
      if not is_dirty[b] then
        is_dirty[b] = true
        dirty[#dirty + 1] = b_string
      end
      if cached_first and b >= cached_first and b <= cached_last then
        cached_count, cached_sum = cached_count + 1, cached_sum + amount
      end
    end
    local count, sum = 0, 0
    if window > 0 then
      if cached_first == first and cached_last == b then
        count, sum = cached_count, cached_sum
      else
        for x = first, b do
          count, sum = count + n[x], sum + s[x]
        end
        cached_first, cached_last, cached_count, cached_sum = first, b, count, sum
      end
    end
    if math.abs(sum) > exact or math.abs(s[b]) > exact then inexact = true end
    out[#out + 1] = new
    out[#out + 1] = count
    out[#out + 1] = sum
  end
  for _, b_string in ipairs(dirty) do
    local b = tonumber(b_string)
    local written = refreshed[b]
    if written and written >= refresh_before then
      redis.call('SET', stem .. 'c:' .. b_string, struct.pack(bucket_layout, n[b], s[b], written), 'KEEPTTL')
    else
      redis.call('SET', stem .. 'c:' .. b_string, struct.pack(bucket_layout, n[b], s[b], now), 'EX', ttl)
      redis.call('EXPIRE', stem .. 'e:' .. b_string, ttl)
    end
  end
end
if inexact then
  return redis.error_reply('window sum beyond 2^53 minor units')
end
return out
