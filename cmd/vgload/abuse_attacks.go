package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// attack is one way of trying to knock the server over.
type attack struct {
	name string
	run  func(context.Context, *abuseEnv) attackResult
}

// attacks in the order the suite runs them.
var attacks = []attack{
	{"hostile-state", nil}, // set up before the server starts; see runAbuse
	{"memory-stuffing", attackStuffing},
	{"token-replay", attackTokenReplay},
	{"api-key-cap", attackAPIKeyCap},
	{"ipv6-/64", attackIPv6Network},
	{"ip-flood", attackIPFlood},
	{"idle-keepalive", attackIdleKeepAlive},
	{"big-headers", attackBigHeaders},
	{"slowloris", attackSlowloris},
	{"handshake-flood", attackHandshakeFlood},
	{"frame-flood", attackFrameFlood},
	{"oversized-frames", attackOversized},
	{"outbound-amplification", attackOutbound},
	{"inbound-burst", attackInboundBurst},
}

func attackNames() []string {
	names := make([]string, len(attacks))
	for i, a := range attacks {
		names[i] = a.name
	}
	return names
}

func findAttack(name string) *attack {
	for i := range attacks {
		if attacks[i].name == name {
			return &attacks[i]
		}
	}
	return nil
}

// allTogether runs every attack but the state file's at once, the CPU
// floods at a quarter of their concurrency (abuseEnv.together).
func allTogether(ctx context.Context, env *abuseEnv) attackResult {
	var mu sync.Mutex
	res := attackResult{did: "every attack above at once (the CPU floods — failed logins, frame floods, oversized frames, refused audio — at a quarter of their rate)", limit: "each attack's own", got: map[string]int{}}
	var wg sync.WaitGroup
	for _, a := range attacks {
		if a.run == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := a.run(ctx, env)
			mu.Lock()
			defer mu.Unlock()
			for k, v := range r.got {
				res.got[k] += v
			}
			for _, v := range r.violations {
				res.violations = append(res.violations, a.name+": "+v)
			}
		}()
	}
	wg.Wait()
	return res
}

// attacker is one attacking WebSocket session, opened with coder/websocket
// directly: it may never read.
type attacker struct {
	c *websocket.Conn
	// end is how the session ended: "server 1008 inbound_rate_exceeded",
	// "lost", or an HTTP refusal "401 unauthorized".
	end    string
	errors counter
	done   chan struct{}
}

// dialAttacker opens a session with an API key or a token (query) from a
// client address of its own; it reads what the server says on a goroutine
// of its own unless reading is false.
func dialAttacker(ctx context.Context, env *abuseEnv, key, query, addr string, reading bool) (*attacker, string) {
	u := env.wsURL
	if query != "" {
		u += "?" + query
	}
	h := http.Header{"X-Forwarded-For": {addr}}
	if key != "" {
		h.Set("Authorization", "Bearer "+key)
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPHeader: h, HTTPClient: env.http})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			var body struct {
				Error struct{ Code string } `json:"error"`
			}
			if resp.Body != nil {
				data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				resp.Body.Close()
				_ = json.Unmarshal(data, &body)
			}
			return nil, strconv.Itoa(resp.StatusCode) + " " + body.Error.Code
		}
		return nil, "network"
	}
	c.SetReadLimit(8 << 20)
	a := &attacker{c: c, done: make(chan struct{})}
	if reading {
		go a.read()
	}
	return a, ""
}

func (a *attacker) read() {
	defer close(a.done)
	for {
		_, msg, err := a.c.Read(context.Background())
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				a.end = fmt.Sprintf("server %d %s", ce.Code, ce.Reason)
			} else {
				a.end = "ended"
			}
			return
		}
		if code := errorCode(msg); code != "" {
			a.errors.add(code, 1)
		}
	}
}

// errorCode returns the code of an error event, or "".
func errorCode(msg []byte) string {
	if !strings.Contains(string(msg[:min(len(msg), 40)]), `"error"`) {
		return ""
	}
	var ev struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(msg, &ev)
	return ev.Error.Code
}

// closeAttackers ends every attacker's session and waits for their
// readers.
func closeAttackers(as []*attacker) {
	for _, a := range as {
		if a != nil {
			_ = a.c.CloseNow()
		}
	}
	for _, a := range as {
		if a != nil {
			select {
			case <-a.done:
			case <-time.After(10 * time.Second):
			}
		}
	}
}

// freshHonest opens n sessions with the honest key, each from its own
// address (198.51.100.base and up), and counts those the server still
// holds a second later (a refusal after the upgrade, such as memory_limit,
// closes them at once) and how the others ended; it closes them all.
func freshHonest(ctx context.Context, env *abuseEnv, n, base int) (held int, refused map[string]int) {
	refused = map[string]int{}
	var as []*attacker
	for i := range n {
		a, why := dialAttacker(ctx, env, env.keys["honest"], "", fmt.Sprintf("198.51.100.%d", base+i), true)
		if a == nil {
			refused["refused "+why]++
			continue
		}
		as = append(as, a)
	}
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
	}
	for _, a := range as {
		select {
		case <-a.done:
			refused["closed: "+a.end]++
		default:
			held++
		}
	}
	closeAttackers(as)
	return held, refused
}

// addr is a client address of the attacker's: TEST-NET-3 for IPv4.
func attackerAddr(n int) string { return fmt.Sprintf("203.0.%d.%d", 113+n/250, 1+n%250) }

// attackStuffing: sessions push binary audio as fast as the server takes
// it and never commit. Each may buffer 60 s (the suite's
// --max-buffered-audio); together they want several times the memory
// budget. Limit: the budget counts no more than itself, the stuffers get
// buffer_full and keep their sessions.
func attackStuffing(ctx context.Context, env *abuseEnv) attackResult {
	n := env.cfg.stuffers
	res := attackResult{
		did:   fmt.Sprintf("%d sessions (one API key) push binary audio as fast as taken, never commit (60 s each allowed: %d MB wanted)", n, n*60*48000/1_000_000),
		limit: "buffer_full, sessions kept (a stuffer that stops reading its errors may end as slow_consumer); the budget never passed",
		got:   map[string]int{},
	}
	as := make([]*attacker, n)
	var wg sync.WaitGroup
	var refusals counter
	for i := range n {
		a, refused := dialAttacker(ctx, env, env.keys["stuffer"], "audio=binary", attackerAddr(1000+i), true)
		if a == nil {
			refusals.add(refused, 1)
			continue
		}
		as[i] = a
	}
	// Loud noise: the echo's turn detection keeps no silence it will not
	// commit, so a stuffer has to "speak" to be buffered at all.
	chunk := make([]byte, 128<<10)
	for i := range chunk {
		chunk[i] = byte(i*7 + i>>3)
	}
	deadline := time.Now().Add(env.cfg.duration)
	var pushed atomic.Int64
	for _, a := range as {
		if a == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := a.c.Write(wctx, websocket.MessageBinary, chunk)
				cancel()
				if err != nil {
					return
				}
				pushed.Add(int64(len(chunk)))
				// Once refused, keep the pressure on: 5 messages a second,
				// 13 times real-time audio (together, a quarter of it).
				if len(a.errors.snapshot()) > 0 {
					time.Sleep(quarterTogether(env, 200*time.Millisecond))
				}
			}
		}()
	}
	// Honest newcomers while the stuffers hold what the budget lets them:
	// the promises' eighth is kept for them.
	select {
	case <-time.After(time.Until(deadline) / 2):
	case <-ctx.Done():
	}
	fresh, refused := freshHonest(ctx, env, 10, 150)
	res.got["fresh honest session (mid-attack)"] = fresh
	for k, v := range refused {
		res.got["fresh honest "+k] += v
	}
	if fresh < 10 {
		res.violations = append(res.violations, fmt.Sprintf("%d of 10 fresh honest sessions refused or cut mid-attack", 10-fresh))
	}
	wg.Wait()
	open := 0
	for _, a := range as {
		if a == nil {
			continue
		}
		select {
		case <-a.done:
			res.got["closed: "+a.end]++
			if a.end != "server 1008 slow_consumer" {
				res.violations = append(res.violations, "a stuffer's session ended: "+a.end)
			}
		default:
			open++
		}
		for k, v := range a.errors.snapshot() {
			res.got[k] += v
		}
	}
	for k, v := range refusals.snapshot() {
		res.got["refused "+k] += v
	}
	res.got["sessions kept to the end"] = open
	accounted, _ := env.adm.metricSum(ctx, "voicegateway_memory_accounted_bytes")
	res.detail = fmt.Sprintf("pushed %d MB, %d MB held at the end", pushed.Load()/1_000_000, int64(accounted)/1_000_000)
	if res.got["buffer_full"] == 0 {
		res.violations = append(res.violations, "no buffer_full: the budget never refused")
	}
	closeAttackers(as)
	return res
}

// attackTokenReplay: one client token presented again and again.
func attackTokenReplay(ctx context.Context, env *abuseEnv) attackResult {
	res := attackResult{
		did:   "one client token presented 50 times from one address",
		limit: "one session per token (--max-sessions-per-token 1); reuse is a 401 failure, the address is blocked after 10",
		got:   map[string]int{},
	}
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	token, err := mintFor(mctx, env, env.keys["replay"])
	cancel()
	if err != nil {
		res.violations = append(res.violations, "mint: "+err.Error())
		return res
	}
	var as []*attacker
	for range 50 {
		a, refused := dialAttacker(ctx, env, "", "token="+token, "203.0.113.250", true)
		if a != nil {
			as = append(as, a)
			res.got["session"]++
			continue
		}
		res.got[refused]++
	}
	if len(as) > 1 {
		res.violations = append(res.violations, fmt.Sprintf("%d sessions from one token", len(as)))
	}
	if res.got["429 rate_limited"] == 0 {
		res.violations = append(res.violations, "the replaying address was never blocked")
	}
	time.Sleep(min(env.cfg.duration, 3*time.Second))
	closeAttackers(as)
	return res
}

// mintFor mints a client token with key.
func mintFor(ctx context.Context, env *abuseEnv, key string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+env.public+"/v1/client_tokens", strings.NewReader(`{"expires_in":60}`))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := env.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct{ Value string }
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<10)).Decode(&body); err != nil || body.Value == "" {
		return "", fmt.Errorf("mint: HTTP %d", resp.StatusCode)
	}
	return body.Value, nil
}

// holdSessions opens n sessions with key from the addresses addr gives,
// holds them for the row and reports what was accepted.
func holdSessions(ctx context.Context, env *abuseEnv, n int, key string, addr func(int) string, res *attackResult) int {
	var as []*attacker
	for i := range n {
		a, refused := dialAttacker(ctx, env, key, "", addr(i), true)
		if a == nil {
			res.got[refused]++
			continue
		}
		as = append(as, a)
	}
	time.Sleep(min(env.cfg.duration/2, 2*time.Second)) // refusals after the upgrade arrive as closes
	accepted := 0
	for _, a := range as {
		select {
		case <-a.done:
			res.got[a.end]++
		default:
			accepted++
		}
	}
	res.got["sessions held"] = accepted
	time.Sleep(env.cfg.duration / 2)
	closeAttackers(as)
	return accepted
}

// attackAPIKeyCap: one API key opens more sessions than its cap.
func attackAPIKeyCap(ctx context.Context, env *abuseEnv) attackResult {
	n := env.cfg.perKey + 40
	res := attackResult{
		did:   fmt.Sprintf("one API key opens %d sessions, each from its own address", n),
		limit: fmt.Sprintf("%d sessions per key (--max-sessions-per-key), more closed with 1008 api_key_session_limit", env.cfg.perKey),
		got:   map[string]int{},
	}
	if held := holdSessions(ctx, env, n, env.keys["capped"], func(i int) string { return attackerAddr(2000 + i) }, &res); held > env.cfg.perKey {
		res.violations = append(res.violations, fmt.Sprintf("%d sessions held", held))
	}
	return res
}

// attackIPv6Network: one client moves through the addresses of its /64,
// for sessions and for failed authentications.
func attackIPv6Network(ctx context.Context, env *abuseEnv) attackResult {
	const n = 100
	res := attackResult{
		did:   fmt.Sprintf("%d sessions from %d addresses of one IPv6 /64; then wrong keys from 20 more", n, n),
		limit: fmt.Sprintf("%d sessions per /64 (--max-sessions-per-ip), 1008 client_ip_session_limit; blocked after 10 failures", env.cfg.perIP),
		got:   map[string]int{},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	addr := func(prefix string) string {
		return fmt.Sprintf("%s:%x:%x:%x:%x", prefix, rng.Uint32()&0xffff, rng.Uint32()&0xffff, rng.Uint32()&0xffff, rng.Uint32()&0xffff)
	}
	if held := holdSessions(ctx, env, n, env.keys["network"], func(int) string { return addr("2001:db8:abcd:1") }, &res); held > env.cfg.perIP {
		res.violations = append(res.violations, fmt.Sprintf("%d sessions held from one /64", held))
	}
	blockedAfter := -1
	for i := range 20 {
		status := postToken(ctx, env, "Bearer wrong-key-of-the-abuse-suite-"+strconv.Itoa(i), addr("2001:db8:abcd:2"))
		res.got["wrong key: HTTP "+status]++
		if status == "429" && blockedAfter < 0 {
			blockedAfter = i
		}
	}
	if blockedAfter < 0 || blockedAfter > 10 {
		res.violations = append(res.violations, fmt.Sprintf("the /64 was not blocked after 10 failures (first 429 at %d)", blockedAfter))
	}
	return res
}

// postToken sends one mint request and returns its HTTP status.
func postToken(ctx context.Context, env *abuseEnv, authorization, forwardedFor string) string {
	return post(ctx, env.http, "http://"+env.public+"/v1/client_tokens", authorization, forwardedFor)
}

// attackIPFlood: failed authentications from more addresses than the rate
// limiter tracks.
func attackIPFlood(ctx context.Context, env *abuseEnv) attackResult {
	n := env.cfg.floodAddresses
	res := attackResult{
		did:   fmt.Sprintf("wrong keys from %s addresses (IPv4 and IPv6 /64s), one failure each", thousands(int64(n))),
		limit: fmt.Sprintf("at most %s addresses tracked (--auth-max-tracked); older ones evicted", thousands(int64(env.cfg.maxTracked))),
		got:   map[string]int{},
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: guardedDialer(false).DialContext, MaxIdleConns: 32, MaxIdleConnsPerHost: 32, Proxy: nil}}
	defer client.CloseIdleConnections()
	var next atomic.Int64
	var statuses counter
	var wg sync.WaitGroup
	deadline := time.Now().Add(3 * env.cfg.duration)
	concurrency := 32
	if env.together {
		concurrency = 8
	}
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				statuses.add(post(ctx, client, "http://"+env.public+"/v1/client_tokens", "Bearer wrong-abuse-flood-key-0123", docAddr(uint64(i)+1_000_000).String()), 1)
			}
		}()
	}
	wg.Wait()
	for k, v := range statuses.snapshot() {
		res.got["HTTP "+k] += v
	}
	tracked, _ := env.adm.metricSum(ctx, "voicegateway_ratelimit_tracked_ips")
	evictions, _ := env.adm.metricSum(ctx, "voicegateway_ratelimit_evictions_total")
	res.detail = fmt.Sprintf("%s tracked, %s evictions", thousands(int64(tracked)), thousands(int64(evictions)))
	if int(tracked) > env.cfg.maxTracked {
		res.violations = append(res.violations, fmt.Sprintf("%d addresses tracked", int(tracked)))
	}
	return res
}

// rawConns opens n TCP connections to the public port.
func rawConns(ctx context.Context, env *abuseEnv, n int) []net.Conn {
	d := guardedDialer(false)
	var out []net.Conn
	for range n {
		c, err := d.DialContext(ctx, "tcp", env.public)
		if err == nil {
			out = append(out, c)
		}
	}
	return out
}

// heldFor waits until the server closes each connection and returns the
// longest time one was held, from start.
func heldFor(conns []net.Conn, start time.Time, timeout time.Duration) (longest time.Duration, open int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(start.Add(timeout))
			_, err := io.Copy(io.Discard, c)
			held := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				open++
				return
			}
			longest = max(longest, held)
		}()
	}
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	return longest, open
}

// attackIdleKeepAlive: keep-alive connections that idle after a request.
func attackIdleKeepAlive(ctx context.Context, env *abuseEnv) attackResult {
	const n = 400
	res := attackResult{
		did:   fmt.Sprintf("%d keep-alive connections, one request each, then silence", n),
		limit: "closed by the server after the 30 s idle timeout",
		got:   map[string]int{},
	}
	conns := rawConns(ctx, env, n)
	for _, c := range conns {
		fmt.Fprintf(c, "GET /healthz-not-here HTTP/1.1\r\nHost: gateway\r\n\r\n")
	}
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			res.got["no answer"]++
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		res.got["HTTP "+strconv.Itoa(resp.StatusCode)]++
	}
	longest, open := heldFor(conns, time.Now(), 40*time.Second)
	res.detail = fmt.Sprintf("the longest was held %.1f s", longest.Seconds())
	if open > 0 || longest > 33*time.Second {
		res.violations = append(res.violations, fmt.Sprintf("%d connections still open after 40 s; longest held %s", open, longest))
	}
	res.got["closed by the server"] = len(conns) - open
	return res
}

// attackBigHeaders: requests with headers of a megabyte.
func attackBigHeaders(ctx context.Context, env *abuseEnv) attackResult {
	const n = 200
	res := attackResult{
		did:   fmt.Sprintf("%d connections each sending 1 MiB of request headers", n),
		limit: "431 after 32 KiB of headers (MaxHeaderBytes); nothing more read",
		got:   map[string]int{},
	}
	conns := rawConns(ctx, env, n)
	line := "X-Filler: " + strings.Repeat("a", 8000) + "\r\n"
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			// Write and read at once: the server answers 431 and closes
			// while the client still sends.
			answered := make(chan string, 1)
			go func() {
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					answered <- "closed without an answer"
					return
				}
				resp.Body.Close()
				answered <- "HTTP " + strconv.Itoa(resp.StatusCode)
			}()
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: gateway\r\n")
			for sent := 0; sent < 1<<20; sent += len(line) {
				if _, err := io.WriteString(c, line); err != nil {
					break
				}
			}
			got := <-answered
			mu.Lock()
			res.got[got]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	for k := range res.got {
		if k != "HTTP 431" && k != "closed without an answer" {
			res.violations = append(res.violations, "answered "+k)
		}
	}
	// A server that closes every such connection without a word also
	// reads nothing more, but it would leave the client guessing: the
	// limit is a 431.
	if res.got["HTTP 431"] == 0 {
		res.violations = append(res.violations, "no request answered 431")
	}
	return res
}

// attackSlowloris: clients that trickle their request headers.
func attackSlowloris(ctx context.Context, env *abuseEnv) attackResult {
	const n = 300
	res := attackResult{
		did:   fmt.Sprintf("%d connections sending a header line every 500 ms, never finishing", n),
		limit: "closed 10 s after they connected (ReadHeaderTimeout)",
		got:   map[string]int{},
	}
	conns := rawConns(ctx, env, n)
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: gateway\r\n")
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(500 * time.Millisecond):
				}
				if _, err := fmt.Fprintf(c, "X-Slow-%d: y\r\n", i); err != nil {
					return
				}
			}
		}()
	}
	longest, open := heldFor(conns, start, 20*time.Second)
	close(stop)
	wg.Wait()
	res.detail = fmt.Sprintf("the longest was held %.1f s", longest.Seconds())
	res.got["closed by the server"] = len(conns) - open
	if open > 0 || longest > 13*time.Second {
		res.violations = append(res.violations, fmt.Sprintf("%d still open after 20 s; longest %s", open, longest))
	}
	return res
}

// attackHandshakeFlood: many upgrades at once from an address the rate
// limiter finds suspicious, each waiting out its delay.
func attackHandshakeFlood(ctx context.Context, env *abuseEnv) attackResult {
	const n = 600
	res := attackResult{
		did:   fmt.Sprintf("an address made suspicious (5 failures), then %d upgrades at once from it; 20 fresh honest upgrades meanwhile", n),
		limit: "at most 256 handshakes in progress (503 server_busy beyond), at most 128 waiting out the delay (429 beyond)",
		got:   map[string]int{},
	}
	const addr = "203.0.113.251"
	for i := range 5 {
		postToken(ctx, env, "Bearer wrong-abuse-handshake-key-"+strconv.Itoa(i), addr)
	}
	var peak atomic.Int64
	stopPeek := make(chan struct{})
	peeked := make(chan struct{})
	go func() {
		defer close(peeked)
		for {
			if v, err := env.adm.metricSum(ctx, "voicegateway_handshakes_in_flight"); err == nil && int64(v) > peak.Load() {
				peak.Store(int64(v))
			}
			select {
			case <-stopPeek:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var opened []*attacker
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, refused := dialAttacker(ctx, env, env.keys["replay"], "", addr, true)
			mu.Lock()
			defer mu.Unlock()
			if a != nil {
				opened = append(opened, a)
				res.got["session (after the delay)"]++
				return
			}
			res.got[refused]++
		}()
	}
	// Honest newcomers while the flood waits.
	time.Sleep(200 * time.Millisecond)
	for i := range 20 {
		a, refused := dialAttacker(ctx, env, env.keys["honest"], "", fmt.Sprintf("198.51.100.%d", 100+i), true)
		mu.Lock()
		if a != nil {
			opened = append(opened, a)
			res.got["fresh honest session"]++
		} else {
			res.got["fresh honest refused "+refused]++
		}
		mu.Unlock()
	}
	wg.Wait()
	close(stopPeek)
	<-peeked
	res.detail = fmt.Sprintf("peak %d handshakes in progress", peak.Load())
	if peak.Load() > 256 {
		res.violations = append(res.violations, fmt.Sprintf("%d handshakes in progress", peak.Load()))
	}
	if res.got["fresh honest session"] < 20 {
		res.violations = append(res.violations, "fresh honest upgrades refused during the flood")
	}
	// The flood waits out the suspicious delay; beyond the waiters' cap
	// it is refused at once, so it never holds every handshake slot.
	if res.got["429 rate_limited"] == 0 {
		res.violations = append(res.violations, "no upgrade refused with 429 beyond the waiters' cap")
	}
	closeAttackers(opened)
	return res
}

// attackFrameFlood: sessions that send events far over the inbound rate.
func attackFrameFlood(ctx context.Context, env *abuseEnv) attackResult {
	n := quarterIfTogether(env, 20)
	res := attackResult{
		did:   fmt.Sprintf("%d sessions each sending small events as fast as the socket takes them", n),
		limit: "over --inbound-rate 200/s for a whole burst (400): closed with 1008 inbound_rate_exceeded",
		got:   map[string]int{},
	}
	return sessionsUntilClosed(ctx, env, n, func(i int) string { return attackerAddr(3000 + i) }, []byte(`{"type":"input_audio_buffer.clear"}`), websocket.MessageText, "1008 inbound_rate_exceeded", res)
}

// attackOversized: sessions that send a message over the limit.
func attackOversized(ctx context.Context, env *abuseEnv) attackResult {
	n := quarterIfTogether(env, 20)
	res := attackResult{
		did:   fmt.Sprintf("%d sessions, again and again, each sending a 1 MiB message", n),
		limit: "over --max-message-bytes 256 KiB: closed with 1009 frame_too_large",
		got:   map[string]int{},
	}
	return sessionsUntilClosed(ctx, env, n, func(i int) string { return attackerAddr(3100 + i) }, make([]byte, 1<<20), websocket.MessageBinary, "1009 frame_too_large", res)
}

// quarterIfTogether is n, or a quarter of it when the attacks run together.
func quarterIfTogether(env *abuseEnv, n int) int {
	if env.together {
		return max(1, n/4)
	}
	return n
}

// quarterTogether is d, or four times it when the attacks run together.
func quarterTogether(env *abuseEnv, d time.Duration) time.Duration {
	if env.together {
		return 4 * d
	}
	return d
}

// sessionsUntilClosed opens sessions that send msg until the server closes
// them, again, for the row's duration, and checks each close is want.
func sessionsUntilClosed(ctx context.Context, env *abuseEnv, n int, addr func(int) string, msg []byte, typ websocket.MessageType, want string, res attackResult) attackResult {
	deadline := time.Now().Add(env.cfg.duration)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				query := ""
				if typ == websocket.MessageBinary {
					query = "audio=binary"
				}
				a, refused := dialAttacker(ctx, env, env.keys["replay"], query, addr(i), true)
				if a == nil {
					mu.Lock()
					res.got[refused]++
					mu.Unlock()
					time.Sleep(200 * time.Millisecond)
					continue
				}
				for {
					wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					err := a.c.Write(wctx, typ, msg)
					cancel()
					if err != nil {
						break
					}
				}
				select {
				case <-a.done:
				case <-time.After(10 * time.Second):
					a.end = "not closed"
				}
				_ = a.c.CloseNow()
				mu.Lock()
				res.got[a.end]++
				if !strings.Contains(a.end, want) {
					res.violations = append(res.violations, "ended "+a.end)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(res.violations) > 5 {
		res.violations = append(res.violations[:5], fmt.Sprintf("and %d more", len(res.violations)-5))
	}
	return res
}

// attackOutbound: sessions whose requests are answered with large events,
// and that never read.
func attackOutbound(ctx context.Context, env *abuseEnv) attackResult {
	const n = 20
	res := attackResult{
		did:   fmt.Sprintf("%d sessions send session.update with 60 KB of instructions (each answered in full) and never read", n),
		limit: "their queue bounded (256 messages, 1 MiB); ended within --write-timeout (10 s): a write that cannot finish (write_failed) or a queue that stays full (slow_consumer)",
		got:   map[string]int{},
	}
	// Just under the 64 KiB a session object may hold: every update is
	// answered with a session.updated that repeats it.
	update := []byte(`{"type":"session.update","session":{"instructions":"` + strings.Repeat("x", 60_000) + `"}}`)
	slowBefore, _ := env.adm.metricSum(ctx, `voicegateway_errors_total{code="slow_consumer"}`)
	failedBefore, _ := env.adm.metricSum(ctx, `voicegateway_errors_total{code="write_failed"}`)
	var wg sync.WaitGroup
	var mu sync.Mutex
	start := time.Now()
	var longest time.Duration
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, refused := dialAttacker(ctx, env, env.keys["replay"], "", attackerAddr(3200+i), false)
			if a == nil {
				mu.Lock()
				res.got[refused]++
				mu.Unlock()
				return
			}
			defer a.c.CloseNow()
			ended := "not ended"
			for time.Since(start) < env.cfg.duration+15*time.Second {
				// A write may wait as long as the server lets it: the
				// server, not this client, is to end the session.
				wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := a.c.Write(wctx, websocket.MessageText, update)
				cancel()
				if err != nil {
					ended = "ended by the server"
					break
				}
			}
			mu.Lock()
			res.got[ended]++
			longest = max(longest, time.Since(start))
			mu.Unlock()
		}()
	}
	wg.Wait()
	slow, _ := env.adm.metricSum(ctx, `voicegateway_errors_total{code="slow_consumer"}`)
	failed, _ := env.adm.metricSum(ctx, `voicegateway_errors_total{code="write_failed"}`)
	res.detail = fmt.Sprintf("the server counted %.0f slow_consumer and %.0f write_failed; the last ended after %.1f s",
		slow-slowBefore, failed-failedBefore, longest.Seconds())
	if res.got["not ended"] > 0 {
		res.violations = append(res.violations, fmt.Sprintf("%d sessions not ended", res.got["not ended"]))
	}
	if longest > 14*time.Second {
		res.violations = append(res.violations, fmt.Sprintf("the last ended after %s, past --write-timeout", longest.Round(time.Second)))
	}
	return res
}

// attackInboundBurst: reading clients send a burst of invalid events each.
func attackInboundBurst(ctx context.Context, env *abuseEnv) attackResult {
	const n, burst = 20, 400
	res := attackResult{
		did:   fmt.Sprintf("%d reading sessions each send %d invalid events at once", n, burst),
		limit: "every event answered (invalid_event), no session cut (backpressure, not slow_consumer)",
		got:   map[string]int{},
	}
	var as []*attacker
	for i := range n {
		a, refused := dialAttacker(ctx, env, env.keys["replay"], "", attackerAddr(3300+i), true)
		if a == nil {
			res.got[refused]++
			continue
		}
		as = append(as, a)
	}
	var wg sync.WaitGroup
	for _, a := range as {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range burst {
				ev := fmt.Sprintf(`{"type":"no.such.event","event_id":"burst-%d"}`, j)
				if a.c.Write(ctx, websocket.MessageText, []byte(ev)) != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(env.cfg.duration)
	for _, a := range as {
		for a.errors.snapshot()["invalid_event"] < burst && time.Now().Before(deadline) {
			select {
			case <-a.done:
			case <-time.After(20 * time.Millisecond):
				continue
			}
			break
		}
	}
	for _, a := range as {
		for k, v := range a.errors.snapshot() {
			res.got[k] += v
		}
		select {
		case <-a.done:
			res.got["closed: "+a.end]++
			res.violations = append(res.violations, "a reading session was cut: "+a.end)
		default:
		}
	}
	if res.got["invalid_event"] != n*burst {
		res.violations = append(res.violations, fmt.Sprintf("%d of %d events answered", res.got["invalid_event"], n*burst))
	}
	closeAttackers(as)
	return res
}

// writeHostileState writes a rate limiter state file two and a half times
// the tracker's size, one entry in ten malformed: what a corrupted file, or
// one from a pod with a larger table, may hold.
func writeHostileState(path string, maxTracked int) (entries int, size int64, err error) {
	entries = maxTracked * 5 / 2
	f, err := os.Create(path)
	if err != nil {
		return 0, 0, err
	}
	w := bufio.NewWriter(f)
	now := time.Now().UTC()
	fmt.Fprintf(w, `{"version":1,"exported_at":%q,"entries":[`, now.Format(time.RFC3339Nano))
	for i := range entries {
		if i > 0 {
			w.WriteString(",")
		}
		ip := docAddr(uint64(i) + 5_000_000)
		switch {
		case i%10 == 9:
			fmt.Fprintf(w, `{"ip":"not-an-address-%d","failures":3}`, i)
		case i%3 == 0:
			fmt.Fprintf(w, `{"ip":%q,"failures":12,"blocked_until":%q}`, ip, now.Add(time.Hour).Format(time.RFC3339))
		default:
			fmt.Fprintf(w, `{"ip":%q,"failures":2}`, ip)
		}
	}
	w.WriteString("]}")
	if err := w.Flush(); err != nil {
		f.Close()
		return 0, 0, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return 0, 0, err
	}
	return entries, info.Size(), f.Close()
}

// oversizedState is what a server given a state file over its bound did.
type oversizedState struct {
	size    int64
	started bool
	ignored bool
	rss     uint64
}

// tryOversizedState starts a server on a 64 MiB state file of garbage
// (its bound is 256 bytes a tracked entry, at most 64 MiB) and stops it.
func tryOversizedState(ctx context.Context, cfg abuseConfig, dir string) (oversizedState, error) {
	sub := filepath.Join(dir, "oversized")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return oversizedState{}, err
	}
	for _, name := range []string{"api-keys", "fleet"} {
		if err := os.Symlink(filepath.Join(dir, name), filepath.Join(sub, name)); err != nil && !os.IsExist(err) {
			return oversizedState{}, err
		}
	}
	state := filepath.Join(sub, "ratelimit.json")
	f, err := os.Create(state)
	if err != nil {
		return oversizedState{}, err
	}
	const size = 64<<20 + 1
	if err := f.Truncate(size); err != nil {
		f.Close()
		return oversizedState{}, err
	}
	f.Close()
	out := oversizedState{size: size}
	srv, err := startAbuseServer(ctx, cfg, sub)
	if err != nil {
		return out, nil // reported as not started
	}
	out.started = true
	out.rss, _ = procRSS(srv.pid())
	out.ignored = strings.Contains(srv.logs(), "ignoring the rate limiter state file")
	if _, err := srv.stop(20 * time.Second); err != nil {
		return out, err
	}
	return out, nil
}

// hostileStateResult reports what the suite's server did with the hostile
// state file it was started on, and what the oversized one did.
func hostileStateResult(ctx context.Context, env *abuseEnv, logs string, entries int, size int64, over oversizedState) attackResult {
	res := attackResult{
		did: fmt.Sprintf("the server started on a state file of %s entries (%.1f MB, %.1f× --auth-max-tracked, one in ten malformed); another on %d MiB of garbage",
			thousands(int64(entries)), float64(size)/1e6, float64(entries)/float64(env.cfg.maxTracked), over.size>>20),
		limit: fmt.Sprintf("at most %s entries kept; a file over its bound not read", thousands(int64(env.cfg.maxTracked))),
		got:   map[string]int{},
	}
	imported := -1
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "rate limiter state imported") {
			var entry struct{ Entries int }
			if json.Unmarshal([]byte(line), &entry) == nil {
				imported = entry.Entries
			}
		}
	}
	tracked, _ := env.adm.metricSum(ctx, "voicegateway_ratelimit_tracked_ips")
	res.got["entries imported"] = imported
	res.detail = fmt.Sprintf("%s tracked; the garbage file: server started %v, file ignored %v, RSS %.0f MiB", thousands(int64(tracked)), over.started, over.ignored, float64(over.rss)/(1<<20))
	if imported < 0 || imported > env.cfg.maxTracked || int(tracked) > env.cfg.maxTracked {
		res.violations = append(res.violations, fmt.Sprintf("imported %d, tracked %d", imported, int(tracked)))
	}
	if !over.started || !over.ignored {
		res.violations = append(res.violations, "the server given an oversized state file did not start and ignore it")
	}
	time.Sleep(env.cfg.duration / 2)
	return res
}
