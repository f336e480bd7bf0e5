-- wrk script: check-ins and check-outs of 10 000 badges, each connection
-- walking its own stretch of badges, "in" on odd rounds and "out" on even.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
end

request = function()
  counter = counter + 1
  local badge = string.format("%04d", (id * 5000 + counter) % 10000)
  local round = math.floor((id * 5000 + counter) / 10000)
  local direction = (round % 2 == 0) and "in" or "out"
  local body = '{"badge": "' .. badge .. '", "direction": "' .. direction .. '"}'
  return wrk.format("POST", "/api/v1/checkins", {["Content-Type"] = "application/json"}, body)
end

local codes = {}
response = function(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end

done = function(summary, latency, requests)
  io.write(string.format("p50_ms %.3f\np99_ms %.3f\nmax_ms %.3f\nrequests %d\nseconds %.3f\nerrors %d\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
