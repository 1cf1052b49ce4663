-- wrk script for bench/intake_bench.py: replays pre-signed GitHub push deliveries.
--
-- wrk -t1 -c50 -d15s --latency -s bench/intake.lua URL -- FILE PATH START HOST
--
-- FILE holds a count line, then per delivery a line "<delivery-id> <signature> <length>"
-- followed by exactly <length> body bytes. Every delivery is formatted once in init();
-- request() hands them out in order from START (0-based), wrapping (and counting the
-- wraps) at the end. response() counts statuses and keeps the build ids of 202 answers.
-- done() writes a JSON summary to $INTAKE_BENCH_OUT. Meant for one thread (-t1).

local reqs, n = {}, 0
pos, issued, wrapped = 0, 0, 0
statuses, ids = {}, {}

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local path, host = args[2], args[4]
  pos = tonumber(args[3])
  local count = tonumber(file:read("*l"))
  for i = 1, count do
    local delivery, signature, len = file:read("*l"):match("^(%S+) (%S+) (%d+)$")
    local body = file:read(tonumber(len))
    reqs[i] = wrk.format("POST", path, {
      ["Host"] = host,
      ["User-Agent"] = "GitHub-Hookshot/bench",
      ["Content-Type"] = "application/json",
      ["X-GitHub-Event"] = "push",
      ["X-GitHub-Delivery"] = delivery,
      ["X-GitHub-Hook-ID"] = "424242",
      ["X-Hub-Signature-256"] = signature,
    }, body)
  end
  file:close()
  n = count
end

function request()
  pos = pos + 1
  if pos > n then
    pos = 1
    wrapped = wrapped + 1
  end
  issued = issued + 1
  return reqs[pos]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 202 then
    local id = body:match('"build_id":%s*(%d+)')
    if id then
      ids[#ids + 1] = id
    end
  end
end

function done(summary, latency, requests)
  local t = threads[1]
  local parts = {}
  for status, count in pairs(t:get("statuses")) do
    parts[#parts + 1] = string.format('"%d": %d', status, count)
  end
  local out = assert(io.open(os.getenv("INTAKE_BENCH_OUT"), "w"))
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, '
      .. '"write": %d, "status": %d, "timeout": %d}, "p50_us": %d, "p90_us": %d, '
      .. '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "pos": %d, "issued": %d, '
      .. '"wrapped": %d, "statuses": {%s}, "build_ids": [%s]}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, t:get("pos"), t:get("issued"), t:get("wrapped"),
    table.concat(parts, ", "), table.concat(t:get("ids"), ",")))
  out:close()
end
