-- wrk script for bench_gateway.sh: POST a ~1 KB body to every request and
-- count the answers by status. Body size: env WRK_BODY_BYTES (default 1024).
local size = tonumber(os.getenv("WRK_BODY_BYTES") or "1024")
local chars = "abcdefghijklmnopqrstuvwxyz0123456789"
local parts = {}
for i = 1, size do
  local k = (i * 7) % #chars + 1
  parts[i] = chars:sub(k, k)
end
wrk.method = "POST"
wrk.body = table.concat(parts)
wrk.headers["Content-Type"] = "application/octet-stream"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do
      total[k] = (total[k] or 0) + v
    end
  end
  local secs = summary.duration / 1e6
  io.write(string.format("RESULT requests=%d seconds=%.3f p50_ms=%.3f p99_ms=%.3f "
                         .. "errors_connect=%d errors_read=%d errors_write=%d "
                         .. "errors_status=%d errors_timeout=%d",
                         summary.requests, secs, latency:percentile(50) / 1000,
                         latency:percentile(99) / 1000, summary.errors.connect,
                         summary.errors.read, summary.errors.write,
                         summary.errors.status, summary.errors.timeout))
  for k, v in pairs(total) do
    io.write(string.format(" status_%d=%d", k, v))
  end
  io.write("\n")
end
