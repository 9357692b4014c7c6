-- streamfeat: fenced, monotonic write of entity hashes (contract section 4).
--
-- One call writes one or more entities atomically, each only if its version
-- is newer than the stored one. Redis runs a script without interleaving
-- other commands, so the read of _v and the writes form one compare-and-set.
--
-- KEYS[k]  the hash of entity k (sf:{topology}:{entity_id})
-- ARGV[1]  TTL in ms; "0" means no expiry (an existing TTL is removed)
-- ARGV[2]  msgpack: [names, items]
--            names  the field names this call uses (referred to by 1-based index)
--            items  one per key, in KEYS order, either
--              [version, asof, sets, dels]   some fields:
--                sets   [name_index, value_text, name_index, value_text, ...] to HSET
--                dels   [name_index, ...] to HDEL (absent values)
--              or [version, asof, row]       every field, the worker's form:
--                row    one value_text per name, in names order; false: HDEL it
--              version  _v text, fixed-width, so text order is version order
--              asof     _asof text, event time in ms
-- ARGV[3]  "newer": apply a write only if its version is newer than the stored one;
--          "refresh": also if it is equal (a changed definition's values for the same
--          records, written again once recomputed), never if the stored one is newer
--
-- Feature names and values travel in one msgpack string instead of thousands
-- of arguments: packing arguments dominates the client's cost otherwise.
--
-- Returns one integer per key:
--    1  applied (values, _asof, _updated, _v written; TTL refreshed)
--    0  rejected: the stored _v equals the new one (a replay of a write already applied)
--   -1  rejected: the stored _v is newer (a stale or fenced writer)
--
-- _updated is the Redis server's clock (TIME) in ms, the same for every key of a call.
-- Versions are compared only with == and <; every version is the same length
-- and has its dots at the same places, so any collation orders them as bytes do.

if redis.replicate_commands then
  -- Redis < 7: replicate effects, which makes TIME before a write legal.
  -- (On Redis >= 7 this is the default and the call is a no-op.)
  redis.replicate_commands()
end

local CHUNK = 2000  -- arguments per HSET/HDEL, well below Lua's unpack limit
local ttl = tonumber(ARGV[1])
local payload = cmsgpack.unpack(ARGV[2])
local names, items = payload[1], payload[2]
local refresh = ARGV[3] == 'refresh'
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))

local function call_chunked(cmd, key, args)
  local n = #args
  local i = 1
  while i <= n do
    local j = math.min(i + CHUNK - 1, n)
    redis.call(cmd, key, unpack(args, i, j))
    i = j + 1
  end
end

local results = {}
for k = 1, #KEYS do
  local key = KEYS[k]
  local item = items[k]
  local v = item[1]
  local cur = redis.call('HGET', key, '_v')
  if cur and cur == v and not refresh then
    results[k] = 0
  elseif cur and v < cur then
    results[k] = -1
  else
    local args = {}
    local dels = {}
    local row = item[3]
    if item[4] == nil then
      for i = 1, #names do
        local x = row[i]
        if x then
          args[#args + 1] = names[i]
          args[#args + 1] = x
        else
          dels[#dels + 1] = names[i]
        end
      end
    else
      for i = 1, #item[4] do dels[i] = names[item[4][i]] end
      for i = 1, #row, 2 do
        args[i] = names[row[i]]
        args[i + 1] = row[i + 1]
      end
    end
    if #dels > 0 then
      call_chunked('HDEL', key, dels)
    end
    local n = #args
    args[n + 1], args[n + 2] = '_v', v
    args[n + 3], args[n + 4] = '_asof', item[2]
    args[n + 5], args[n + 6] = '_updated', now
    call_chunked('HSET', key, args)
    if ttl > 0 then
      redis.call('PEXPIRE', key, ttl)
    else
      redis.call('PERSIST', key)
    end
    results[k] = 1
  end
end
return results
