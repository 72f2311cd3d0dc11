-- Query-mode driver for Lua, run by backend-ai-krunner as a persistent process.
-- Commands arrive on fd 3 and events go out on fd 4, as frames `KIND LEN\n` + LEN bytes
-- (see krunner/src/query.rs). Globals persist between runs (locals end with their snippet,
-- as in the REPL); a snippet that is an expression has its values printed. print, io.write
-- and io.stderr:write go out as ordered events; io.read reads the user's input (the runner
-- asks for it). SIGINT stops a running snippet (through luaposix when installed, else the
-- standalone interpreter's own one-shot handler) and keeps the interpreter.
local cmd = assert(io.open("/dev/fd/3", "rb"))
local ev = assert(io.open("/dev/fd/4", "wb"))
ev:setvbuf("no")
io.stdout:setvbuf("no")

local function send(kind, payload)
  payload = payload or ""
  ev:write(kind, " ", tostring(#payload), "\n", payload)
end

local function read_cmd()
  local header = cmd:read("l")
  if not header then os.exit(0) end
  local op, n = header:match("^(%S+) (%d+)$")
  n = tonumber(n) or 0
  local text = ""
  if n > 0 then text = cmd:read(n) or "" end
  return op, text
end

local function join(...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = tostring(parts[i]) end
  return parts
end

function print(...)
  send("stdout", table.concat(join(...), "\t") .. "\n")
end

local function stream(name, real)
  local s = {}
  function s.write(self, ...)
    local parts = table.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    send(name, table.concat(parts))
    return self
  end
  function s.flush(self) return self end
  function s.setvbuf() return true end
  function s.close() return true end
  function s.lines(self, ...) return real:lines(...) end
  function s.read(self, ...) return real:read(...) end
  return s
end
local stdout, stderr = stream("stdout", io.stdout), stream("stderr", io.stderr)
io.write = function(...) return stdout:write(...) end
io.stdout = stdout
io.stderr = stderr

-- Interrupts: errors raised in luaposix's handler are swallowed, so the handler installs
-- a hook that raises the error in the running code at its next instruction.
local has_posix, psignal = pcall(require, "posix.signal")
local function guard()
  debug.sethook()
  error("interrupted", 0)
end
if has_posix then
  psignal.signal(psignal.SIGINT, function() debug.sethook(guard, "", 1) end)
end

local function run(code)
  local chunk = load("return " .. code, "=query", "t")
  local echo = chunk ~= nil
  if not chunk then
    local err
    chunk, err = load(code, "=query", "t")
    if not chunk then
      send("stderr", err .. "\n")
      return 1
    end
  end
  local results = table.pack(xpcall(chunk, function(e)
    if e == "interrupted" or e == "interrupted!" then return "Interrupted" end
    -- The traceback stops at the snippet: the driver's frames are not the user's.
    local tb = debug.traceback(tostring(e), 2)
    return (tb:gsub("\n%s*%[C%]: in function 'xpcall'.*$", ""))
  end))
  if not results[1] then
    send("stderr", tostring(results[2]) .. "\n")
    return 1
  end
  if echo and results.n > 1 then
    print(table.unpack(results, 2, results.n))
  end
  return 0
end

local function complete(text)
  local path = text:match("[%a_][%w_%.:]*$") or ""
  local base, sep, prefix = path:match("^(.*)([%.:])([%w_]*)$")
  local scope = _G
  if base then
    scope = _G
    for part in base:gmatch("[^%.:]+") do
      if type(scope) ~= "table" then return {} end
      scope = scope[part]
    end
  else
    base, sep, prefix = "", "", path
  end
  local out = {}
  local seen = {}
  local function add(t)
    if type(t) ~= "table" then return end
    for k in pairs(t) do
      if type(k) == "string" and k:sub(1, #prefix) == prefix and not seen[k] then
        seen[k] = true
        out[#out + 1] = base .. sep .. k
      end
    end
  end
  add(scope)
  local mt = getmetatable(scope)
  if mt and type(mt.__index) == "table" then add(mt.__index) end
  table.sort(out)
  return out
end

local function step()
  local op, text = read_cmd()
  if op == "run" then
    local ok, code = pcall(run, text)
    send("done", tostring(ok and code or 1))
  elseif op == "complete" then
    send("completion", table.concat(complete(text), "\n"))
  end
end

send("ready", "")
while true do
  -- An interrupt that lands between snippets raises here; it has nothing to stop.
  pcall(step)
end
