-- wrk -s wrk_json.lua URL: after wrk's own report, the run's figures as one JSON line on
-- stdout (loadtest/_wrk.py reads it): requests, seconds, bytes, the error counts and the
-- latency percentiles in microseconds.
done = function(summary, latency, requests)
  local e = summary.errors
  local p = {}
  for _, q in ipairs({50, 75, 90, 99, 99.9}) do
    p[#p + 1] = string.format('"%g":%d', q, latency:percentile(q))
  end
  io.write(string.format(
    '{"requests":%d,"seconds":%.6f,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"non2xx":%d},' ..
    '"latency_us":{"min":%d,"mean":%.3f,"max":%d,"stdev":%.3f,%s}}\n',
    summary.requests, summary.duration / 1e6, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency.min, latency.mean, latency.max, latency.stdev, table.concat(p, ",")))
end
