-- wrk script: Dovecot-shaped auth policy requests against any server that
-- speaks Dovecot's policy protocol (authbrake-policy, weakforced, ...).
--
--   wrk -t1 -c4 -d10s --latency -s bench/policy.lua http://127.0.0.1:PORT/ -- \
--       mode=mix key=APIKEY [users=10000] [addrs=50000] [fail=10] [seed=1]
--
-- mode=allow   POST /?command=allow  (the before-auth check)
-- mode=report  POST /?command=report (success true/false, policy_reject false)
-- mode=mix     50/50 of the two
-- key=...      sent as "X-API-Key: ..." (header=Name overrides the name)
-- fail=N       percent of attempts with a wrong password (default 10)
--
-- Users log in mostly from their own few addresses (80 %), sometimes from
-- anywhere (20 %); 8 addresses share each /24. Everything is drawn from a
-- deterministic PRNG, so two servers measured with the same arguments see
-- the same request stream. done() prints one line "CSV,..." (see CSV_HEADER)
-- with wrk's own latency distribution and how the server answered.

local CSV_HEADER = "mode,connections,threads,duration_s,requests,req_per_s," ..
	"p50_ms,p90_ms,p99_ms,max_ms,allow,tarpit,reject,report_ok,http_error," ..
	"socket_errors,timeouts,sent_allow,sent_report"

opts = {
	mode = "mix", key = "", header = "X-API-Key", users = 10000,
	addrs = 50000, fail = 10, seed = 1, home = 80, conns = "",
}

local function parse_args(args)
	for _, a in ipairs(args or {}) do
		local k, v = a:match("^([%w_]+)=(.*)$")
		if not k or opts[k] == nil then
			error("policy.lua: bad argument '" .. a .. "' (want mode=, key=, " ..
			      "header=, users=, addrs=, fail=, seed=, home=, conns=)")
		end
		if type(opts[k]) == "number" then
			opts[k] = tonumber(v) or error("policy.lua: " .. k .. " wants a number")
		else
			opts[k] = v
		end
	end
	if opts.mode ~= "allow" and opts.mode ~= "report" and opts.mode ~= "mix" then
		error("policy.lua: mode must be allow, report or mix")
	end
end

-- Park-Miller minimal standard PRNG: exact in doubles, same on every LuaJIT.
local state = 1
local function srand(s) state = (s % 2147483646) + 1 end
local function rand() state = (state * 16807) % 2147483647; return state end
local function rand_below(n) return rand() % n end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local HEX = "0123456789abcdef"

local addr_tab = {}
local users_n, addrs_n

-- Address i: subnet i/8 gets three octets, host i%8 one more. Built from
-- its own PRNG sequence so every thread has the same table.
local function build_addresses()
	srand(424242)
	local subnet
	for i = 0, addrs_n - 1 do
		if i % 8 == 0 then
			local a = 1 + rand_below(222)
			if a == 10 or a == 127 or a == 100 or a == 172 or a == 192 then a = a + 1 end
			subnet = a .. "." .. rand_below(256) .. "." .. rand_below(256) .. "."
		end
		addr_tab[i] = subnet .. (1 + rand_below(254))
	end
end

local function hex4(n)
	local s = ""
	for _ = 1, 4 do
		local d = n % 16
		s = HEX:sub(d + 1, d + 1) .. s
		n = (n - d) / 16
	end
	return s
end

local function session_id()
	local t = {}
	for i = 1, 16 do
		local d = rand_below(64)
		t[i] = B64:sub(d + 1, d + 1)
	end
	return table.concat(t)
end

counts = { status0 = 0, tarpit = 0, reject = 0, http_error = 0,
	sent_allow = 0, sent_report = 0 }
local threads = {}

-- main state: number the threads (each thread gets the global tno)
function setup(thread)
	thread:set("tno", #threads)
	table.insert(threads, thread)
end

function init(args)
	parse_args(args)
	users_n, addrs_n = opts.users, opts.addrs
	build_addresses()
	srand(opts.seed * 7919 + (tno or 0) * 104729)
	wrk.method = "POST"
	wrk.headers["Content-Type"] = "application/json"
	if opts.key ~= "" then wrk.headers[opts.header] = opts.key end
end

local pending = {}	-- per connection order is FIFO; wrk sends one at a time

function request()
	local u = rand_below(users_n)
	local ai
	if rand_below(100) < opts.home then
		ai = (u * 5 + rand_below(5)) % addrs_n
	else
		ai = rand_below(addrs_n)
	end
	local addr = addr_tab[ai]
	local failed = rand_below(100) < opts.fail
	-- 12-bit truncated hash, as Dovecot sends with auth_policy_hash_truncate = 12
	local pw = failed and rand_below(4096) * 16 or ((u * 2654435761) % 4096) * 16
	local cmd = opts.mode
	if cmd == "mix" then cmd = (rand_below(2) == 0) and "allow" or "report" end
	if cmd == "allow" then
		counts.sent_allow = counts.sent_allow + 1
	else
		counts.sent_report = counts.sent_report + 1
	end
	local proto = (rand_below(4) == 0) and "pop3" or "imap"
	local body = '{"login":"user' .. u .. '@example.net","pwhash":"' .. hex4(pw) ..
		'","remote":"' .. addr .. '","real_rip":"' .. addr ..
		'","device_id":"","protocol":"' .. proto .. '","session_id":"' ..
		session_id() .. '"'
	if cmd == "report" then
		body = body .. ',"success":' .. (failed and "false" or "true") ..
			',"policy_reject":false'
	end
	body = body .. ',"tls":true}'
	return wrk.format(nil, "/?command=" .. cmd, nil, body)
end

-- A report is always answered {"status":0} (or another server's "ok"); in mix mode the replies cannot
-- be told apart per connection, so done() subtracts the reports sent.
function response(status, headers, body)
	if status ~= 200 then
		counts.http_error = counts.http_error + 1
		return
	end
	local s = tonumber(body:match('"status"%s*:%s*(%-?%d+)'))
	if s == nil and body:match('"status"%s*:') then
		-- a status that is not a number ({"status":"ok"}, as weakforced
		-- answers reports): answered
		counts.status0 = counts.status0 + 1
	elseif s == nil then
		counts.http_error = counts.http_error + 1
	elseif s == 0 then
		counts.status0 = counts.status0 + 1
	elseif s > 0 then
		counts.tarpit = counts.tarpit + 1
	else
		counts.reject = counts.reject + 1
	end
end

function done(summary, latency, requests)
	local c = { status0 = 0, tarpit = 0, reject = 0, http_error = 0,
		sent_allow = 0, sent_report = 0 }
	for _, t in ipairs(threads) do
		for k, v in pairs(t:get("counts")) do c[k] = c[k] + v end
	end
	-- replies still in flight when wrk stopped were sent but not counted:
	-- at most one per connection
	local o = threads[1]:get("opts")	-- init() ran in the threads only
	local report_ok = math.min(c.status0, c.sent_report)
	local allow = c.status0 - report_ok
	local secs = summary.duration / 1e6
	local e = summary.errors
	local function ms(us) return string.format("%.3f", us / 1000) end
	io.write("CSVHEAD,", CSV_HEADER, "\n")
	io.write(table.concat({ "CSV", o.mode, o.conns, #threads,
		string.format("%.2f", secs), summary.requests,
		string.format("%.0f", summary.requests / secs),
		ms(latency:percentile(50)), ms(latency:percentile(90)),
		ms(latency:percentile(99)), ms(latency.max),
		allow, c.tarpit, c.reject, report_ok, c.http_error,
		e.connect + e.read + e.write, e.timeout,
		c.sent_allow, c.sent_report }, ","), "\n")
end
