// Package cluster makes the replicas of one VoiceGateway one fleet: a Peer
// wraps a hashicorp/memberlist instance (membership, gossip and push/pull
// anti-entropy over a gossip port), encrypted with a key derived from the
// fleet Secret's fleet-key, and carries the auth rate limiter's replicated
// state (server/ratelimit, replicate.go) between them.
//
// The Peer's life is one call, Run, that a lifecycle loop owns: it starts
// memberlist, joins the peers named by --cluster-peers (addresses, or DNS
// names such as the headless Service's, resolved again on every attempt),
// settles (received a peer's full state, or found no peer, or waited
// SettleTimeout) before the server reports ready, rejoins when it finds
// itself alone, and when its context ends hands its state to a peer with a
// last push/pull, leaves and shuts memberlist down — every goroutine of it
// ended. Without --cluster-listen there is no Peer and the limiter is the
// process's own, as before.
package cluster

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/memberlist"

	"github.com/voicegateway/voicegateway/internal/boundedfile"

	"github.com/voicegateway/voicegateway/server/ratelimit"
)

// Defaults applied by Config.WithDefaults.
const (
	DefaultSettleTimeout = 15 * time.Second
	DefaultJoinInterval  = 2 * time.Second
	// DefaultPort is the gossip port (memberlist's own default).
	DefaultPort = 7946
)

// Tuning that is not configurable, documented in docs/operations.md.
const (
	// gossipInterval and gossipNodes: every 200 ms each replica sends its
	// queued changes to 3 random peers, so a block reaches a fleet of a
	// few replicas in one or two rounds.
	gossipInterval = 200 * time.Millisecond
	gossipNodes    = 3
	// pushPullInterval is the anti-entropy period: the full state with
	// one random peer.
	pushPullInterval = 30 * time.Second
	// maxQueued bounds each broadcast queue (blocks, failures); the
	// oldest, most sent changes are dropped beyond it and counted. One
	// change per IP is queued at most: a newer one replaces it.
	maxQueued = 4096
	// resolveTimeout bounds one DNS lookup of a peer name.
	resolveTimeout = 2 * time.Second
	// keyInfo is the HKDF info that derives the gossip key from the fleet
	// key, so that the fleet key itself is used for nothing but deriving.
	keyInfo = "voicegateway.dev gossip v1"
)

// Config configures a Peer.
type Config struct {
	// Listen is the gossip address, host:port, for UDP and TCP.
	Listen string
	// Advertise is the address peers reach this one at; empty takes
	// Listen's, or a private address of the host when Listen's host is a
	// wildcard.
	Advertise string
	// Peers are host:port entries: addresses, or names resolved again on
	// every join attempt (the headless Service).
	Peers []string
	// PeersFile, when set, is read again on every join attempt for more
	// entries, one host:port a line ('#' comments): the operator writes
	// its pods' addresses there, for clusters without DNS for Services.
	PeersFile string
	// FleetKey is the fleet Secret's fleet-key; the gossip key is derived
	// from it. Required: gossip is never unencrypted.
	FleetKey []byte
	// FleetKeySource, when set, is asked for the fleet key again every
	// JoinInterval: a changed key becomes the primary gossip key, the
	// previous one is kept for decryption, older ones are dropped.
	FleetKeySource func() []byte
	// SettleTimeout bounds the wait for a peer's state before the server
	// reports ready.
	SettleTimeout time.Duration
	// JoinInterval is how often names are resolved and joined while the
	// replica is alone.
	JoinInterval time.Duration
	// HandoffTimeout bounds the last push/pull and the leave.
	HandoffTimeout time.Duration
	// NodeName is this replica's name before a random suffix (the host
	// name when empty).
	NodeName string
	// PushPullInterval is the anti-entropy period (0: 30 s); benchmarks
	// shorten it.
	PushPullInterval time.Duration
}

// GossipKey derives memberlist's AES-256 key from the fleet key with HKDF
// (SHA-256): the fleet key is 32 bytes already, but deriving keeps one
// secret from serving two ciphers.
func GossipKey(fleetKey []byte) ([]byte, error) {
	if len(fleetKey) < 16 {
		return nil, errors.New("cluster: the fleet key is missing or shorter than 16 bytes")
	}
	return hkdf.Key(sha256.New, fleetKey, nil, keyInfo, 32)
}

// Peer is this replica's membership in the fleet.
type Peer struct {
	cfg     Config
	limiter *ratelimit.Limiter
	log     logr.Logger
	metrics *Metrics

	origin ratelimit.Origin
	name   string

	ml       atomic.Pointer[memberlist.Memberlist]
	settled  atomic.Bool
	blocks   *memberlist.TransmitLimitedQueue
	failures *memberlist.TransmitLimitedQueue
	// keyring is memberlist's; fleetKey and previousKey are the fleet keys
	// its primary and previous gossip keys derive from. Used by Run only.
	keyring     *memberlist.Keyring
	transport   *boundedTransport
	fleetKey    []byte
	previousKey []byte
	// mergeMu serialises merges of full states, which may arrive from
	// several push/pulls at once, so that their buffers are not decoded
	// in parallel for nothing.
	mergeMu sync.Mutex
}

// New returns a Peer that replicates limiter. Nothing runs until Run. It
// makes the limiter report its changes to the Peer.
func New(cfg Config, limiter *ratelimit.Limiter, m *Metrics, log logr.Logger) (*Peer, error) {
	if cfg.Listen == "" {
		return nil, errors.New("cluster: no listen address")
	}
	if _, err := GossipKey(cfg.FleetKey); err != nil {
		return nil, err
	}
	if cfg.SettleTimeout <= 0 {
		cfg.SettleTimeout = DefaultSettleTimeout
	}
	if cfg.JoinInterval <= 0 {
		cfg.JoinInterval = DefaultJoinInterval
	}
	if cfg.HandoffTimeout <= 0 {
		cfg.HandoffTimeout = time.Second
	}
	var id [8]byte
	for binary.BigEndian.Uint64(id[:]) == 0 {
		if _, err := rand.Read(id[:]); err != nil {
			return nil, err
		}
	}
	name := cfg.NodeName
	if name == "" {
		name, _ = os.Hostname()
	}
	p := &Peer{
		cfg: cfg, limiter: limiter, log: log, metrics: m,
		origin: ratelimit.Origin(binary.BigEndian.Uint64(id[:])),
	}
	p.name = fmt.Sprintf("%s-%016x", name, uint64(p.origin))
	numNodes := func() int {
		if ml := p.ml.Load(); ml != nil {
			return ml.NumMembers()
		}
		return 1
	}
	p.blocks = &memberlist.TransmitLimitedQueue{NumNodes: numNodes, RetransmitMult: 4}
	p.failures = &memberlist.TransmitLimitedQueue{NumNodes: numNodes, RetransmitMult: 4}
	m.peer.Store(p)
	limiter.Replicate(p.origin, p.queue)
	return p, nil
}

// Name is this replica's member name.
func (p *Peer) Name() string { return p.name }

// Settled reports whether the replica may report ready: it took a peer's
// state, or found no peer, or waited SettleTimeout.
func (p *Peer) Settled() bool { return p.settled.Load() }

// Members returns the names of the members this replica sees alive,
// itself included, sorted.
func (p *Peer) Members() []string {
	ml := p.ml.Load()
	if ml == nil {
		return nil
	}
	var names []string
	for _, n := range ml.Members() {
		if n.State == memberlist.StateAlive {
			names = append(names, n.Name)
		}
	}
	slices.Sort(names)
	return names
}

// queue puts a change of the limiter on the broadcast queue, replacing one
// for the same IP. It runs on the request path of a failed authentication
// and on the gossip path of a merge that started a block.
func (p *Peer) queue(c ratelimit.Change) {
	b := &broadcast{name: c.IP.String(), msg: encodeMessage(&c)}
	q := p.failures
	if c.BlockedUntil != 0 {
		q = p.blocks
	}
	q.QueueBroadcast(b)
	if c.Blocked {
		// A block that starts here goes to every member at once, beside
		// the gossip that repeats it: the next gossip round is up to
		// 200 ms away. Blocks start rarely (once per address per block
		// duration), so this costs a few datagrams, not a flood.
		if ml := p.ml.Load(); ml != nil {
			for _, n := range ml.Members() {
				if n.Name != p.name && n.State == memberlist.StateAlive {
					if err := ml.SendBestEffort(n, b.msg); err == nil {
						p.metrics.sentBytes[trafficBroadcast].Add(uint64(len(b.msg)))
					}
				}
			}
		}
	}
	if n := q.NumQueued(); n > maxQueued {
		q.Prune(maxQueued)
		p.metrics.queueDropped.Add(uint64(n - maxQueued))
	}
}

// broadcast is one change on the queue; a newer change for the same IP
// (the same name) replaces it.
type broadcast struct {
	name string
	msg  []byte
}

func (b *broadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*broadcast)
	return ok && ob.name == b.name
}
func (b *broadcast) Name() string    { return b.name }
func (b *broadcast) Message() []byte { return b.msg }
func (b *broadcast) Finished()       {}

// Run starts memberlist, joins and settles, keeps the replica in the fleet
// until ctx ends, then hands its state on, leaves and stops. Every
// goroutine it or memberlist started has ended when it returns.
func (p *Peer) Run(ctx context.Context) error {
	mcfg, err := p.memberlistConfig()
	if err != nil {
		return err
	}
	ml, err := memberlist.Create(mcfg)
	if err != nil {
		_ = p.transport.Shutdown()
		return fmt.Errorf("--cluster-listen %s: %w", p.cfg.Listen, err)
	}
	p.ml.Store(ml)
	self := ml.LocalNode()
	p.log.Info("cluster listening", "gossip", self.Address(), "name", p.name, "peers", p.cfg.Peers)
	defer func() {
		if err := ml.Shutdown(); err != nil {
			p.log.Error(err, "stopping memberlist")
		}
		p.ml.Store(nil)
		p.metrics.members.Store(0)
	}()

	start := time.Now()
	ticks := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			p.handoff(ml)
			return nil
		case <-timer.C:
		}
		ticks++
		switch {
		case !p.settled.Load() || ml.NumMembers() < 2:
			p.join(ctx, ml, start)
		case ticks%healEvery == 0:
			p.heal(ctx, ml)
		}
		p.rotateKey()
		p.metrics.members.Store(int64(ml.NumMembers()))
		p.metrics.health.Store(int64(ml.GetHealthScore()))
		interval := p.cfg.JoinInterval
		if !p.settled.Load() {
			interval = min(interval, 250*time.Millisecond)
		}
		timer.Reset(interval)
	}
}

// join resolves the peers and joins those found; a join is a push/pull
// with each of them, so a replica that joined holds their state.
func (p *Peer) join(ctx context.Context, ml *memberlist.Memberlist, start time.Time) {
	addrs, answered := p.resolve(ctx, ml.LocalNode())
	switch {
	case len(addrs) > 0:
		began := time.Now()
		n, err := ml.Join(addrs)
		// A join through an address that reached this replica itself
		// (a Service's address) took nobody's state.
		if n > 0 && ml.NumMembers() > 1 {
			if !p.settled.Load() {
				p.log.Info("joined the fleet; its state is merged", "members", ml.NumMembers(), "took", time.Since(began).String())
				p.settled.Store(true)
			}
			return
		}
		p.metrics.joinFailures.Add(1)
		p.log.V(1).Info("no peer answered a join", "peers", addrs, "error", err)
	case answered && !p.settled.Load():
		// The sources name this replica alone: the first of a fleet.
		p.log.Info("no other replica found; serving alone until one joins")
		p.settled.Store(true)
		return
	}
	if !p.settled.Load() && time.Since(start) >= p.cfg.SettleTimeout {
		p.log.Info("no peer's state within the settle timeout; serving with the state held", "settleTimeout", p.cfg.SettleTimeout.String())
		p.settled.Store(true)
	}
}

// healEvery: every this many join intervals a replica in a fleet looks for
// peers its sources name that it does not see alive, and joins them: two
// sides of a healed partition that each kept several members merge.
const healEvery = 5

// heal joins the peers the sources name that are not alive members.
func (p *Peer) heal(ctx context.Context, ml *memberlist.Memberlist) {
	addrs, _ := p.resolve(ctx, ml.LocalNode())
	alive := map[string]bool{}
	for _, n := range ml.Members() {
		if n.State == memberlist.StateAlive {
			alive[n.Address()] = true
		}
	}
	var missing []string
	for _, a := range addrs {
		if !alive[a] {
			missing = append(missing, a)
		}
	}
	if len(missing) == 0 {
		return
	}
	if n, _ := ml.Join(missing); n > 0 {
		p.log.Info("joined peers it did not see (a healed partition or a missed join)", "peers", n, "members", ml.NumMembers())
	}
}

// resolve turns the peer entries into addresses other than self's. It
// reports answered=true when a source answered (a name resolved, the peers
// file was read): with no address besides self's, this replica is alone.
func (p *Peer) resolve(ctx context.Context, self *memberlist.Node) ([]string, bool) {
	selfAddr := self.Address()
	var out []string
	// No source at all: nobody to wait for.
	answered := len(p.cfg.Peers) == 0 && p.cfg.PeersFile == ""
	entries := p.cfg.Peers
	if p.cfg.PeersFile != "" {
		fromFile, err := readPeersFile(p.cfg.PeersFile)
		switch {
		case err == nil:
			answered = true
			entries = append(slices.Clip(entries), fromFile...)
		case !errors.Is(err, fs.ErrNotExist):
			p.log.Error(err, "reading the peers file", "path", p.cfg.PeersFile)
		}
	}
	for _, entry := range entries {
		host, port, err := net.SplitHostPort(entry)
		if err != nil {
			host, port = entry, strconv.Itoa(DefaultPort)
		}
		var ips []string
		if ip := net.ParseIP(host); ip != nil {
			ips = []string{host}
		} else {
			lctx, cancel := context.WithTimeout(ctx, resolveTimeout)
			ips, err = net.DefaultResolver.LookupHost(lctx, host)
			cancel()
			if err != nil || len(ips) == 0 {
				p.log.V(1).Info("peer name does not resolve yet", "name", host, "error", err)
				continue
			}
		}
		answered = true
		for _, ip := range ips {
			a := net.JoinHostPort(ip, port)
			if a != selfAddr && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out, answered
}

// Bounds of the peers file.
const (
	maxPeersFileBytes = 64 << 10
	maxPeersFromFile  = 256
)

// readPeersFile reads up to maxPeersFromFile entries of a peers file.
func readPeersFile(path string) ([]string, error) {
	data, err := boundedfile.Read(path, maxPeersFileBytes)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(out) == maxPeersFromFile {
			break
		}
		out = append(out, line)
	}
	return out, nil
}

// handoff pushes the state to up to two live peers with a last push/pull,
// then leaves, all within HandoffTimeout.
func (p *Peer) handoff(ml *memberlist.Memberlist) {
	deadline := time.Now().Add(p.cfg.HandoffTimeout)
	// Every stream of this replica, the push/pulls in flight included,
	// ends by the deadline.
	p.transport.bound(deadline)
	var to []string
	for _, n := range ml.Members() {
		if n.Name != p.name && n.State == memberlist.StateAlive && len(to) < 2 {
			to = append(to, n.Address())
		}
	}
	if len(to) > 0 {
		began := time.Now()
		n, err := ml.Join(to)
		if n > 0 {
			p.log.Info("state handed to the fleet", "peers", n, "took", time.Since(began).String())
		} else {
			p.log.Error(err, "state not handed on: no peer answered the last push/pull")
		}
	}
	if err := ml.Leave(max(time.Until(deadline), 10*time.Millisecond)); err != nil {
		p.log.V(1).Info("leaving the fleet", "error", err)
	}
}

func (p *Peer) memberlistConfig() (*memberlist.Config, error) {
	key, err := GossipKey(p.cfg.FleetKey)
	if err != nil {
		return nil, err
	}
	keyring, err := memberlist.NewKeyring(nil, key)
	if err != nil {
		return nil, err
	}
	p.keyring, p.fleetKey = keyring, p.cfg.FleetKey
	host, port, err := splitHostPort(p.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("--cluster-listen: %w", err)
	}
	c := memberlist.DefaultLANConfig()
	c.Name = p.name
	c.BindAddr, c.BindPort = host, port
	c.AdvertisePort = port
	if host != "" && host != "0.0.0.0" && host != "::" {
		c.AdvertiseAddr = host
	}
	if p.cfg.Advertise != "" {
		if c.AdvertiseAddr, c.AdvertisePort, err = splitHostPort(p.cfg.Advertise); err != nil {
			return nil, fmt.Errorf("--cluster-advertise: %w", err)
		}
	}
	c.Keyring = keyring
	c.GossipVerifyIncoming, c.GossipVerifyOutgoing = true, true
	c.GossipInterval, c.GossipNodes = gossipInterval, gossipNodes
	c.PushPullInterval = pushPullInterval
	if p.cfg.PushPullInterval > 0 {
		c.PushPullInterval = p.cfg.PushPullInterval
	}
	// memberlist's TCP timeout (10 s) stays for ordinary push/pulls of
	// large states; the hand-off bounds its own streams (transport.go).
	c.Delegate = &delegate{p: p}
	c.Logger = log.New(&logWriter{log: p.log.WithName("memberlist"), metrics: p.metrics}, "", 0)
	if p.transport, err = newBoundedTransport(c.BindAddr, c.BindPort, c.Logger); err != nil {
		return nil, fmt.Errorf("--cluster-listen %s: %w", p.cfg.Listen, err)
	}
	c.Transport = p.transport
	return c, nil
}

// rotateKey follows a changed fleet key: its gossip key becomes primary,
// the previous one stays for decrypting peers that have not changed yet
// (the kubelet updates each pod's Secret volume in its own time), and any
// older one is removed. Keys are never logged.
func (p *Peer) rotateKey() {
	if p.cfg.FleetKeySource == nil {
		return
	}
	next := p.cfg.FleetKeySource()
	if len(next) == 0 || bytes.Equal(next, p.fleetKey) {
		return
	}
	key, err := GossipKey(next)
	if err == nil {
		err = p.keyring.AddKey(key)
	}
	if err == nil {
		err = p.keyring.UseKey(key)
	}
	if err != nil {
		p.log.Error(err, "the fleet key changed but cannot be used for gossip; keeping the current one")
		return
	}
	p.previousKey, p.fleetKey = p.fleetKey, next
	keep := [][]byte{key}
	if prev, err := GossipKey(p.previousKey); err == nil {
		keep = append(keep, prev)
	}
	for _, k := range p.keyring.GetKeys() {
		if !slices.ContainsFunc(keep, func(kk []byte) bool { return bytes.Equal(k, kk) }) {
			_ = p.keyring.RemoveKey(k)
		}
	}
	p.log.Info("the fleet key changed: gossip is sealed with the new key, the previous one still opens", "keys", len(p.keyring.GetKeys()))
}

func splitHostPort(hostport string) (string, int, error) {
	host, portText, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("port %q is not 1 to 65535", portText)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// logWriter turns memberlist's log lines ("[WARN] memberlist: ...") into
// logr calls: errors as errors, warnings at the default level, the rest at
// debug levels, and counts the errors and warnings. memberlist logs node
// names and addresses, never the key.
type logWriter struct {
	log     logr.Logger
	metrics *Metrics
}

func (w *logWriter) Write(b []byte) (int, error) {
	line := strings.TrimSpace(string(b))
	level, msg := "", line
	if strings.HasPrefix(line, "[") {
		if end := strings.IndexByte(line, ']'); end > 0 {
			level, msg = line[1:end], strings.TrimSpace(line[end+1:])
		}
	}
	msg = strings.TrimPrefix(msg, "memberlist: ")
	switch level {
	case "ERR", "ERROR":
		w.metrics.logErrors.Add(1)
		w.log.Error(nil, msg)
	case "WARN":
		w.metrics.logWarnings.Add(1)
		w.log.Info(msg)
	case "INFO":
		w.log.V(1).Info(msg)
	default:
		w.log.V(2).Info(msg)
	}
	return len(b), nil
}

// Status is the replica's view of the fleet for /status.
func (p *Peer) Status() (members int, digest string, settled bool) {
	names := p.Members()
	h := sha256.New()
	for _, n := range names {
		h.Write([]byte(n))
		h.Write([]byte{0})
	}
	return len(names), fmt.Sprintf("%x", h.Sum(nil)[:8]), p.Settled()
}
