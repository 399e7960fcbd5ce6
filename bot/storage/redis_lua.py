"""The Redis store's Lua scripts: each one a step that must happen atomically on the server,
whatever the other replicas do meanwhile (fenced writes, the conversation lock, token buckets).
"""

from __future__ import annotations

__all__ = ["SCRIPTS"]

# KEYS: conv, fence, lastq, reply, asked. ARGV: token ('' = not fenced), turn JSON, role,
# content, reply record prefix ('' = no reply id), user, now, asked member, asked seconds.
APPEND = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('FENCED')
end
redis.call('RPUSH', KEYS[1], ARGV[2])
if ARGV[3] == 'user' then
  redis.call('SET', KEYS[3], ARGV[4])
  if ARGV[6] ~= '' then
    redis.call('ZADD', KEYS[5], ARGV[7], ARGV[8])
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', tonumber(ARGV[7]) - tonumber(ARGV[9]))
    redis.call('EXPIRE', KEYS[5], ARGV[9])
  end
elseif ARGV[3] == 'assistant' and ARGV[5] ~= '' then
  local question = redis.call('GET', KEYS[3]) or ''
  redis.call('SET', KEYS[4], ARGV[5] .. cjson.encode(question) .. ']')
end
return 1
"""

# KEYS: conv, start, fence. ARGV: token, marker JSON.
RESET = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return redis.error_reply('FENCED')
end
local length = redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], length)
return length
"""

# KEYS: lock, fence. ARGV: ttl ms. The new fencing token, or nil when someone holds the lock.
ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
"""

# KEYS: lock. ARGV: token, ttl ms.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: bucket, told. ARGV: tokens a second, burst. A token bucket on Redis's own clock (the
# replicas' clocks may differ): {taken, seconds until a token, first refusal of the window}.
TAKE_TOKEN = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local held = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(held[1]) or burst
local stamp = tonumber(held[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local taken, wait, first = 0, 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
  redis.call('DEL', KEYS[2])
else
  wait = (1 - tokens) / rate
  if redis.call('SET', KEYS[2], '1', 'PX', math.max(1, math.ceil(wait * 1000)), 'NX') then
    first = 1
  end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {taken, tostring(wait), first}
"""

# A draft or a snippet, settled once. KEYS: the records, the pending ids. ARGV: id, state,
# decided by, now, the field its text goes in, that text. 1 when the record was pending.
DECIDE_PENDING = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then
  return 0
end
local record = cjson.decode(value)
if record['state'] ~= 'pending' then
  return 0
end
record['state'] = ARGV[2]
record['decided_by'] = ARGV[3]
record['decided_at'] = tonumber(ARGV[4])
record[ARGV[5]] = ARGV[6]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(record))
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: handoff, claims. ARGV: by, now, claim entry prefix (JSON up to the time). {1, by} the
# first time, else {0, who has it} ('' when no handoff is open).
CLAIM_HANDOFF = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, ''}
end
if redis.call('HSETNX', KEYS[1], 'claimed_by', ARGV[1]) == 0 then
  return {0, redis.call('HGET', KEYS[1], 'claimed_by')}
end
redis.call('HSET', KEYS[1], 'claimed_at', ARGV[2])
local started = redis.call('HGET', KEYS[1], 'started_at')
redis.call('RPUSH', KEYS[2], ARGV[3] .. started .. ', "claimed_at": ' .. ARGV[2] .. '}')
return {1, ARGV[1]}
"""

#: Each script by the name ``RedisStore`` calls it by.
SCRIPTS = {
    "append": APPEND,
    "reset": RESET,
    "acquire": ACQUIRE,
    "renew": RENEW,
    "release": RELEASE,
    "take_token": TAKE_TOKEN,
    "decide_pending": DECIDE_PENDING,
    "claim_handoff": CLAIM_HANDOFF,
}
