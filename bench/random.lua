-- wrk script: each request for a random path PREFIX..N with N in LO..HI
-- (wrk ... -s bench/random.lua URL -- PREFIX LO HI); bench/run.sh appends its report.
local prefix, lo, hi
init = function(args)
  prefix, lo, hi = args[1], tonumber(args[2]), tonumber(args[3])
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 1000)
end
request = function()
  return wrk.format("GET", prefix .. math.random(lo, hi))
end
