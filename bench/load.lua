-- wrk script for bench/load.py: one request shape, optionally spread over many users.
--
-- wrk -t THREADS <options> -s bench/load.lua <url> -- METHOD PATH BODY THREADS [USERS_FILE]
--
-- USERS_FILE holds one user a line, "<bearer token> <client address>". Each wrk thread
-- takes every n-th user and sends each request as the next user of its share, in turn,
-- with the user's token and its own X-Forwarded-For: the per-user and per-client limits
-- then see requests spread evenly, and no one user's limit is what is measured.
-- done() prints one JSON line for bench/load.py to read.

local counter = 0

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
end

function init(args)
  local method, path, body = args[1], args[2], args[3]
  local threads, users_file = tonumber(args[4]), args[5]
  local headers = { ["Content-Type"] = "application/json" }
  prepared = {}
  if users_file == nil or users_file == "" then
    prepared[1] = wrk.format(method, path, headers, body)
  else
    local line_number = 0
    for line in io.lines(users_file) do
      if line_number % threads == index then
        local token, address = line:match("^(%S+)%s+(%S+)$")
        headers["Authorization"] = "Bearer " .. token
        headers["X-Forwarded-For"] = address
        table.insert(prepared, wrk.format(method, path, headers, body))
      end
      line_number = line_number + 1
    end
  end
  next_request = 0
end

function request()
  next_request = next_request % #prepared + 1
  return prepared[next_request]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.mean, latency.max))
end
