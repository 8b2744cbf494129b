-- wrk script for docs/performance.md: POST /v1/events with one unique, schema-valid event per
-- request, so a lean client (wrk) can drive single mode. The token comes from TOKEN and a run tag
-- from RUN (event ids are RUN-thread-n, so runs and threads never collide):
--   TOKEN=... RUN=r1 wrk -t1 -c64 -d30s --latency -s benches/wrk-post.lua http://127.0.0.1:8080/
-- Any answer but 200 stops the run.
local counter = 0
local next_thread = 0

function setup(thread)
  thread:set("tid", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  token = os.getenv("TOKEN") or error("set TOKEN to a source token")
  run = os.getenv("RUN") or "wrk"
end

function request()
  counter = counter + 1
  local id = run .. "-" .. tid .. "-" .. counter
  local body = '{"action":{"category":"data_export","name":"export table customers","risk":"high"},'
    .. '"actor":{"id":"agent-' .. (counter % 97) .. '","kind":"agent","on_behalf_of":"user-1"},'
    .. '"context":{"model":"model-x","prompt":"export the customers table for the quarterly revenue review"},'
    .. '"event_id":"' .. id .. '","occurred_at":"2026-11-21T10:00:00.123Z",'
    .. '"request_id":"req-' .. id .. '",'
    .. '"resource":{"environment":"prod","id":"warehouse://prod/customers","type":"table"},'
    .. '"type":"approval.requested"}'
  return wrk.format("POST", "/v1/events",
    {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  if status ~= 200 then
    print(status, body)
    os.exit(1)
  end
end
