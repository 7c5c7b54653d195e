-- wrk script: POST one pre-built V2 request body (file named by $BODY) on
-- every request, and print a one-line JSON summary at the end. $CONTENT_TYPE
-- sets the Content-Type (application/json if unset; none if empty, as curl -T).
local file = assert(io.open(os.getenv("BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
local content_type = os.getenv("CONTENT_TYPE") or "application/json"
if content_type ~= "" then
  wrk.headers["Content-Type"] = content_type
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
