-- wrk script: cycles through request bodies that bench/run.py wrote, one file per line.
-- Environment: BENCH_METHOD, BENCH_BODIES (file of bodies, one per line), BENCH_PATHS
-- (file of paths, one per line, for GET), BENCH_KEY.
local method = os.getenv("BENCH_METHOD")
local key = os.getenv("BENCH_KEY")
local items = {}
local count = 0

local function load(path)
  for line in io.lines(path) do
    count = count + 1
    items[count] = line
  end
end

if os.getenv("BENCH_BODIES") ~= "" then load(os.getenv("BENCH_BODIES")) end
if os.getenv("BENCH_PATHS") ~= "" then load(os.getenv("BENCH_PATHS")) end

local next_item = 0
function init(args)
  next_item = math.random(count) - 1
end

function request()
  next_item = next_item % count + 1
  local headers = {["x-api-key"] = key, ["Content-Type"] = "application/json"}
  if method == "GET" then
    return wrk.format("GET", items[next_item], headers, nil)
  end
  return wrk.format(method, nil, headers, items[next_item])
end
