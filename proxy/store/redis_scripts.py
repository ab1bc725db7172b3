"""The Lua scripts behind ``RedisStore``: each runs atomically on the Redis server.

A lease is a hash {owner, fence, host, pid} whose key expires after the lease TTL; the
owner token is the fencing check of every write made under the lease.
"""

# KEYS: lease, fence. ARGV: owner, ttl_ms, host, pid, fence_keep_ms.
# Returns the new fence number, or nil while another holder's lease stands.
ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local fence = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'fence', fence, 'host', ARGV[3], 'pid', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return fence
"""

# KEYS: lease. ARGV: owner, ttl_ms.
RENEW = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: lease. ARGV: owner.
RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: lease, session, rejection, backoff.
# ARGV: owner, version, logged_in_at, expires_at, last_used, host, pid, kind, data, ttl_ms.
# Writes the session only while the lease is the caller's; a success clears the verdicts.
PUBLISH = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[2], 'v', ARGV[2], 'at', ARGV[3], 'exp', ARGV[4], 'used', ARGV[5],
           'host', ARGV[6], 'pid', ARGV[7], 'kind', ARGV[8], 'data', ARGV[9])
redis.call('PEXPIRE', KEYS[2], ARGV[10])
return 1
"""

# KEYS: session. ARGV: version. Compare-and-delete.
INVALIDATE = """
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: session. ARGV: version, last_used, expires_at or '', ttl_ms or ''.
# last_used never moves back; expires_at (and the key's TTL) only when given.
TOUCH = """
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], 'used')) then
  redis.call('HSET', KEYS[1], 'used', ARGV[2])
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'exp', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1
"""

# KEYS: session, rejection, backoff, lease. One consistent read for Store.wait.
SNAPSHOT = """
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]),
        redis.call('HGETALL', KEYS[3]), redis.call('EXISTS', KEYS[4])}
"""

# KEYS: lease. The holder's fields and the milliseconds it has left.
HOLDER = """
return {redis.call('HGETALL', KEYS[1]), redis.call('PTTL', KEYS[1])}
"""
