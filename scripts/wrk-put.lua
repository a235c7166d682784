-- wrk script for scripts/http-bench.sh: every request is a PUT of a
-- 100-byte value under a key no other request uses.
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  n = 0
  body = string.rep("v", 100)
end
function request()
  n = n + 1
  return wrk.format("PUT", "/v1/ns/bench/kv/w" .. tid .. "-" .. n, nil, body)
end
function response(status, headers, body)
  if status ~= 204 then
    error("PUT answered " .. status)
  end
end
