package controllers

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/voicegateway/voicegateway/server/admin/adminapi"
)

// PodReport is what the operator knows of one voice server pod: its place
// in the cluster from the pod object, its sessions from its last successful
// poll.
type PodReport struct {
	Name string
	// Terminating: the pod has a deletion timestamp.
	Terminating bool
	// DeletionDeadline is the pod's deletion timestamp: the kubelet kills
	// it then.
	DeletionDeadline *time.Time
	// Reported: at least one poll of this pod succeeded.
	Reported bool
	Sessions int
	// Draining: the server itself says its drain began (preStop ran).
	Draining bool
	// Stopped: the pod is terminating and its server refuses connections.
	// The server closes its admin listener only after its last session
	// (docs/operations.md, the drain), so it holds none.
	Stopped       bool
	DrainStarted  *time.Time
	DrainDeadline *time.Time
	// Cluster is the pod's view of the fleet's gossip; nil when it does
	// not report one.
	Cluster *adminapi.Cluster
}

// PollerOptions tune the SessionPoller.
type PollerOptions struct {
	// AdminPort is the port of each pod's admin server.
	AdminPort int
	// Interval between polls of a serving pod.
	Interval time.Duration
	// DrainingInterval between polls of a terminating or draining pod,
	// whose session count users watch count down.
	DrainingInterval time.Duration
	// Timeout of one poll; a pod that does not answer in time keeps its
	// last report.
	Timeout time.Duration
	// Concurrency bounds the polls in flight.
	Concurrency int
}

// DefaultPollerOptions are the operator's defaults.
func DefaultPollerOptions() PollerOptions {
	return PollerOptions{
		AdminPort:        int(AdminPort),
		Interval:         5 * time.Second,
		DrainingInterval: time.Second,
		Timeout:          time.Second,
		Concurrency:      32,
	}
}

// SessionPoller learns each voice server pod's sessions from its admin
// /status endpoint, concurrently and with short timeouts, and asks for a
// reconcile of a VoiceGateway whenever what it knows of its pods changed.
// It runs as a manager.Runnable beside the controller, so a slow or dead pod
// never holds up a reconcile: Reconcile only reads the last reports.
type SessionPoller struct {
	reader client.Reader
	http   *http.Client
	opts   PollerOptions
	clock  clock.WithTicker
	log    logr.Logger

	// changes carries the VoiceGateways whose pods' reports changed; the
	// controller watches it through a channel source.
	changes chan event.TypedGenericEvent[types.NamespacedName]

	mu sync.Mutex
	// pods holds the state of every pod seen in the last listing; a pod
	// that is gone is dropped, so the map is bounded by the live pods.
	pods map[types.NamespacedName]*polledPod
	// adminTokens holds each VoiceGateway's admin token, from its fleet
	// Secret, sent with every poll of its pods. The reconciler sets it and
	// drops it when the VoiceGateway is gone. Never logged.
	adminTokens map[types.NamespacedName]string
}

type polledPod struct {
	gateway types.NamespacedName
	ip      string
	report  PodReport
	nextDue time.Time
}

// NewSessionPoller makes a poller that lists pods from reader (the
// manager's cache).
func NewSessionPoller(reader client.Reader, opts PollerOptions, clk clock.WithTicker, log logr.Logger) *SessionPoller {
	defaults := DefaultPollerOptions()
	if opts.AdminPort == 0 {
		opts.AdminPort = defaults.AdminPort
	}
	if opts.Interval <= 0 {
		opts.Interval = defaults.Interval
	}
	if opts.DrainingInterval <= 0 {
		opts.DrainingInterval = defaults.DrainingInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = defaults.Timeout
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = defaults.Concurrency
	}
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: opts.Timeout}).DialContext,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     2 * opts.Interval,
		DisableCompression:  true,
	}
	return &SessionPoller{
		reader: reader,
		// No redirects: no admin endpoint redirects, and a pod must not
		// send the operator's requests elsewhere.
		http: &http.Client{Transport: transport, Timeout: opts.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
		opts:    opts,
		clock:   clk,
		log:     log,
		changes: make(chan event.TypedGenericEvent[types.NamespacedName], 1024),
		pods:    map[types.NamespacedName]*polledPod{},

		adminTokens: map[types.NamespacedName]string{},
	}
}

// SetAdminToken sets the admin token sent to the pods of a VoiceGateway.
func (p *SessionPoller) SetAdminToken(gateway types.NamespacedName, token string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.adminTokens[gateway] = token
}

// ForgetGateway drops what the poller holds for a VoiceGateway that is
// gone; its pods leave with their listing.
func (p *SessionPoller) ForgetGateway(gateway types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.adminTokens, gateway)
}

// Changes is the channel the controller watches.
func (p *SessionPoller) Changes() <-chan event.TypedGenericEvent[types.NamespacedName] {
	return p.changes
}

// NeedLeaderElection: only the leader reconciles, so only it needs reports.
func (p *SessionPoller) NeedLeaderElection() bool { return true }

// Start polls until ctx ends. Every goroutine it starts has returned and
// every idle connection is closed when it returns.
func (p *SessionPoller) Start(ctx context.Context) error {
	defer p.http.CloseIdleConnections()
	// Polls are due on their own schedule; the tick only decides how soon
	// a due poll starts.
	tick := min(p.opts.DrainingInterval, p.opts.Interval) / 2
	ticker := p.clock.NewTicker(tick)
	defer ticker.Stop()
	for {
		if err := p.pollOnce(ctx); err != nil && ctx.Err() == nil {
			p.log.Error(err, "Listing voice server pods failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C():
		}
	}
}

// Reports returns the reports of a VoiceGateway's pods, sorted by name.
func (p *SessionPoller) Reports(gateway types.NamespacedName) []PodReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	var reports []PodReport
	for _, pod := range p.pods {
		if pod.gateway == gateway {
			reports = append(reports, pod.report)
		}
	}
	slices.SortFunc(reports, func(a, b PodReport) int { return strings.Compare(a.Name, b.Name) })
	return reports
}

// pollOnce lists the voice server pods, polls those that are due, and
// announces the VoiceGateways whose reports changed.
func (p *SessionPoller) pollOnce(ctx context.Context) error {
	// The listing is read, never changed, so it shares the cache's
	// objects instead of copying every pod twice a second (at 2,200 pods,
	// copying was about a third of a listing's CPU, docs/benchmarks.md,
	// "Operator at 1000 VoiceGateways").
	var pods corev1.PodList
	if err := p.reader.List(ctx, &pods, client.MatchingLabels{LabelName: appName, LabelManagedBy: ManagedBy},
		client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	now := p.clock.Now()

	type due struct {
		key   types.NamespacedName
		ip    string
		token string
	}
	var dueNow []due
	changed := map[types.NamespacedName]bool{}

	p.mu.Lock()
	seen := make(map[types.NamespacedName]bool, len(pods.Items))
	for i := range pods.Items {
		pod := &pods.Items[i]
		gatewayName := pod.Labels[LabelInstance]
		if gatewayName == "" {
			continue
		}
		key := types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}
		seen[key] = true
		gateway := types.NamespacedName{Namespace: pod.Namespace, Name: gatewayName}
		state := p.pods[key]
		if state == nil {
			state = &polledPod{gateway: gateway, report: PodReport{Name: pod.Name}}
			p.pods[key] = state
			changed[gateway] = true
		}
		terminating := pod.DeletionTimestamp != nil
		var deletionDeadline *time.Time
		if terminating {
			deletionDeadline = ptrTime(pod.DeletionTimestamp.Time)
		}
		if state.report.Terminating != terminating {
			state.report.Terminating = terminating
			state.report.DeletionDeadline = deletionDeadline
			// A pod that begins terminating is polled at once.
			state.nextDue = time.Time{}
			changed[gateway] = true
		}
		if state.ip != pod.Status.PodIP {
			state.ip = pod.Status.PodIP
			state.nextDue = time.Time{}
		}
		finished := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
		if state.ip != "" && !finished && !now.Before(state.nextDue) {
			dueNow = append(dueNow, due{key: key, ip: state.ip, token: p.adminTokens[gateway]})
		}
	}
	for key, state := range p.pods {
		if !seen[key] {
			delete(p.pods, key)
			changed[state.gateway] = true
		}
	}
	p.mu.Unlock()

	// Each poll has its own timeout, so this wait is bounded by
	// ceil(due/concurrency) * timeout however many pods do not answer.
	results := make([]*adminapi.Status, len(dueNow))
	refused := make([]bool, len(dueNow))
	group, groupCtx := errgroup.WithContext(ctx)
	group.SetLimit(p.opts.Concurrency)
	for i, d := range dueNow {
		group.Go(func() error {
			status, err := p.fetch(groupCtx, d.ip, d.token)
			if err != nil {
				refused[i] = errors.Is(err, syscall.ECONNREFUSED)
				p.log.V(1).Info("Polling a voice server pod failed", "pod", d.key, "error", err.Error())
				return nil
			}
			results[i] = status
			return nil
		})
	}
	_ = group.Wait()

	now = p.clock.Now()
	p.mu.Lock()
	for i, d := range dueNow {
		state := p.pods[d.key]
		if state == nil || state.ip != d.ip {
			continue
		}
		interval := p.opts.Interval
		if state.report.Terminating || state.report.Draining {
			interval = p.opts.DrainingInterval
		}
		state.nextDue = now.Add(interval)
		status := results[i]
		next := state.report
		switch {
		case status != nil:
			next.Reported = true
			next.Stopped = false
			next.Sessions = status.Sessions
			next.Draining = status.Draining
			next.DrainStarted = status.DrainStarted
			next.DrainDeadline = status.DrainDeadline
			next.Cluster = status.Cluster
		case refused[i] && next.Terminating:
			// Its sessions ended and it exited; the pod object may stay a
			// while longer.
			next.Reported = true
			next.Stopped = true
			next.Sessions = 0
		default:
			// No answer: keep the last report rather than guess.
			continue
		}
		if !sameReport(next, state.report) {
			state.report = next
			changed[state.gateway] = true
		}
		if next.Terminating || next.Draining {
			state.nextDue = now.Add(p.opts.DrainingInterval)
		}
	}
	p.mu.Unlock()

	for gateway := range changed {
		select {
		case p.changes <- event.TypedGenericEvent[types.NamespacedName]{Object: gateway}:
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// fetch reads a pod's admin status through the contract's client, with the
// admin token when there is one: /status stays open, but a server may tell
// its holder more. The client bounds what it reads and decodes leniently,
// so a pod of an older or newer version still reports what it has.
func (p *SessionPoller) fetch(ctx context.Context, ip, adminToken string) (*adminapi.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	admin, err := adminapi.NewClient(net.JoinHostPort(ip, strconv.Itoa(p.opts.AdminPort)),
		adminapi.ClientOptions{Token: adminToken, HTTPClient: p.http})
	if err != nil {
		return nil, err
	}
	status, err := admin.Status(ctx)
	if err != nil {
		return nil, err
	}
	return &status, nil
}

func sameReport(a, b PodReport) bool {
	return a.Name == b.Name && a.Terminating == b.Terminating && a.Reported == b.Reported &&
		a.Sessions == b.Sessions && a.Draining == b.Draining && a.Stopped == b.Stopped &&
		sameTime(a.DeletionDeadline, b.DeletionDeadline) &&
		sameTime(a.DrainStarted, b.DrainStarted) && sameTime(a.DrainDeadline, b.DrainDeadline) &&
		(a.Cluster == nil) == (b.Cluster == nil) && (a.Cluster == nil || *a.Cluster == *b.Cluster)
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func ptrTime(t time.Time) *time.Time { return &t }

// podLabelSelector selects every voice server pod the operator manages.
func podLabelSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{LabelName: appName, LabelManagedBy: ManagedBy})
}
