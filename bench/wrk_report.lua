-- For bench/run.py. With arguments `-- PORT COUNT` every request probes the next of COUNT distinct
-- loopback targets 127.1.x.y:PORT (no two concurrent requests ask for the same target, so neither
-- exporter can answer one from another's probe); and at the end wrk's summary is printed as one
-- machine-readable line (latencies in microseconds).
local port, count, n = nil, 0, 0

function init(args)
  if #args >= 2 then
    port, count = args[1], tonumber(args[2])
  end
end

function request()
  if port == nil then
    return wrk.request()
  end
  n = n + 1
  local i = n % count
  return wrk.format(nil, string.format("/probe?module=tcp_connect&target=127.1.%d.%d:%s",
                                       math.floor(i / 250), i % 250 + 1, port))
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %.0f, "p90_us": %.0f, "p99_us": %.0f, ' ..
    '"max_us": %.0f, "connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"status_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
