package controllers

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// adminServer answers /status like a voice server, on ip:port.
type adminServer struct {
	sessions atomic.Int64
	requests atomic.Int64
	// requireToken, when set, is the admin token a request must carry;
	// others get 401, like a server's admin endpoints that need it.
	requireToken atomic.Pointer[string]
	// authorizations holds the Authorization header of every request.
	authorizations chan string
	server         *http.Server
	done           chan struct{}
}

func startAdminServer(t *testing.T, ip string, port int, sessions int64) *adminServer {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	s := &adminServer{done: make(chan struct{}), authorizations: make(chan string, 100)}
	s.sessions.Store(sessions)
	s.server = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		select {
		case s.authorizations <- r.Header.Get("Authorization"):
		default:
		}
		if want := s.requireToken.Load(); want != nil && r.Header.Get("Authorization") != "Bearer "+*want {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, `{"version":"test","sessions":%d,"ready":true,"phase":"serving","future_field":1}`, s.sessions.Load())
	})}
	go func() {
		defer close(s.done)
		_ = s.server.Serve(l)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.server.Shutdown(ctx)
		<-s.done
	})
	return s
}

func voicePod(namespace, gateway, name, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{
			LabelName: appName, LabelInstance: gateway, LabelManagedBy: ManagedBy,
		}, Finalizers: []string{"test/hold"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
}

func drainChanges(p *SessionPoller) []string {
	var got []string
	for {
		select {
		case e := <-p.changes:
			got = append(got, e.Object.String())
		default:
			slices.Sort(got)
			return got
		}
	}
}

func TestSessionPoller(t *testing.T) {
	ctx := context.Background()
	ipA, ipSilent, ipOther := "127.0.0.21", "127.0.0.22", "127.0.0.23"
	l, err := net.Listen("tcp", ipA+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	serverA := startAdminServer(t, ipA, port, 4)
	serverOther := startAdminServer(t, ipOther, port, 1)
	// Accepts connections and never answers.
	silent, err := net.Listen("tcp", net.JoinHostPort(ipSilent, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = silent.Close() })

	reader := fake.NewClientBuilder().WithObjects(
		voicePod("ns", "gw", "a", ipA),
		voicePod("ns", "gw", "silent", ipSilent),
		voicePod("ns", "gw", "pending", ""),
		voicePod("ns", "other", "o", ipOther),
	).WithStatusSubresource(&corev1.Pod{}).Build()
	poller := NewSessionPoller(reader, PollerOptions{AdminPort: port, Interval: time.Hour, DrainingInterval: time.Hour, Timeout: 300 * time.Millisecond},
		clock.RealClock{}, logr.Discard())
	t.Cleanup(poller.http.CloseIdleConnections)
	gw := types.NamespacedName{Namespace: "ns", Name: "gw"}

	// First pass: every pod with an IP is polled; the silent one times out
	// without holding up the others.
	if err := poller.pollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	reports := poller.Reports(gw)
	if len(reports) != 3 {
		t.Fatalf("reports = %+v, want a, pending, silent", reports)
	}
	if a := reports[0]; a.Name != "a" || !a.Reported || a.Sessions != 4 {
		t.Errorf("a = %+v, want 4 sessions", a)
	}
	for _, r := range reports[1:] {
		if r.Reported {
			t.Errorf("%s reported without answering", r.Name)
		}
	}
	if got := drainChanges(poller); !slices.Equal(got, []string{"ns/gw", "ns/other"}) {
		t.Errorf("changes = %v", got)
	}

	// Nothing is due again within the interval: no poll, no change.
	if err := poller.pollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if n := serverA.requests.Load(); n != 1 {
		t.Errorf("a polled %d times, want once within the interval", n)
	}
	if got := drainChanges(poller); len(got) != 0 {
		t.Errorf("changes without a change: %v", got)
	}

	// A pod that begins terminating is polled at once, whatever the
	// interval, and its sessions are followed.
	serverA.sessions.Store(3)
	var podA corev1.Pod
	if err := reader.Get(ctx, client.ObjectKey{Namespace: "ns", Name: "a"}, &podA); err != nil {
		t.Fatal(err)
	}
	if err := reader.Delete(ctx, &podA); err != nil {
		t.Fatal(err)
	}
	if err := poller.pollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if a := poller.Reports(gw)[0]; !a.Terminating || a.DeletionDeadline == nil || a.Sessions != 3 {
		t.Errorf("a = %+v, want terminating with 3 sessions", a)
	}
	if got := drainChanges(poller); !slices.Equal(got, []string{"ns/gw"}) {
		t.Errorf("changes = %v", got)
	}

	// A pod that is gone is forgotten.
	var podO corev1.Pod
	if err := reader.Get(ctx, client.ObjectKey{Namespace: "ns", Name: "o"}, &podO); err != nil {
		t.Fatal(err)
	}
	podO.Finalizers = nil
	if err := reader.Update(ctx, &podO); err != nil {
		t.Fatal(err)
	}
	if err := reader.Delete(ctx, &podO); err != nil {
		t.Fatal(err)
	}
	if err := poller.pollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := poller.Reports(types.NamespacedName{Namespace: "ns", Name: "other"}); len(got) != 0 {
		t.Errorf("reports of a deleted pod: %+v", got)
	}
	if got := drainChanges(poller); !slices.Equal(got, []string{"ns/other"}) {
		t.Errorf("changes = %v", got)
	}
	if serverOther.requests.Load() != 1 {
		t.Errorf("other polled %d times", serverOther.requests.Load())
	}
}

// lastAuthorization returns the Authorization header of the server's
// latest request.
func (s *adminServer) lastAuthorization(t *testing.T) string {
	t.Helper()
	last, seen := "", false
	for {
		select {
		case a := <-s.authorizations:
			last, seen = a, true
		default:
			if !seen {
				t.Fatal("the server got no request")
			}
			return last
		}
	}
}

// TestSessionPollerSendsAdminToken: the poller sends each VoiceGateway's
// admin token to that VoiceGateway's pods only, as a bearer token, and
// stops sending it once the VoiceGateway is forgotten.
func TestSessionPollerSendsAdminToken(t *testing.T) {
	ctx := context.Background()
	ipA, ipOther := "127.0.0.26", "127.0.0.27"
	l, err := net.Listen("tcp", ipA+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	serverA := startAdminServer(t, ipA, port, 4)
	const token = "vgw_admin_0123456789abcdefghijklmnopqrstuvwxyz"
	serverA.requireToken.Store(ptrString(token))
	serverOther := startAdminServer(t, ipOther, port, 1)

	reader := fake.NewClientBuilder().WithObjects(
		voicePod("ns", "gw", "a", ipA),
		voicePod("ns", "other", "o", ipOther),
	).Build()
	poller := NewSessionPoller(reader, PollerOptions{AdminPort: port, Interval: time.Nanosecond, DrainingInterval: time.Nanosecond, Timeout: time.Second},
		clock.RealClock{}, logr.Discard())
	t.Cleanup(poller.http.CloseIdleConnections)
	gw := types.NamespacedName{Namespace: "ns", Name: "gw"}
	poller.SetAdminToken(gw, token)

	if err := poller.pollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := serverA.lastAuthorization(t); got != "Bearer "+token {
		t.Errorf("Authorization = %q, want the gateway's admin token", got)
	}
	if got := serverOther.lastAuthorization(t); got != "" {
		t.Errorf("another gateway's pod got Authorization %q", got)
	}
	if a := poller.Reports(gw)[0]; !a.Reported || a.Sessions != 4 {
		t.Errorf("a = %+v, want its 4 sessions", a)
	}

	// Forgotten: the token is no longer sent, the server refuses, and the
	// last report stands.
	poller.ForgetGateway(gw)
	serverA.sessions.Store(9)
	if err := poller.pollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := serverA.lastAuthorization(t); got != "" {
		t.Errorf("Authorization = %q after the gateway was forgotten", got)
	}
	if a := poller.Reports(gw)[0]; a.Sessions != 4 {
		t.Errorf("a = %+v, want the last report (a refused poll tells nothing)", a)
	}
}

func ptrString(s string) *string { return &s }

// TestSessionPollerStops: Start returns when its context ends, with every
// goroutine it started gone (the package's goleak check sees the rest).
func TestSessionPollerStops(t *testing.T) {
	reader := fake.NewClientBuilder().Build()
	poller := NewSessionPoller(reader, PollerOptions{Interval: 10 * time.Millisecond, DrainingInterval: 10 * time.Millisecond}, clock.RealClock{}, logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- poller.Start(ctx) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSessionPollerTerminatedServer: a terminating pod whose server has
// closed its admin port has closed its sessions too (the drain closes the
// admin listener last), so it stops counting them; a serving pod that
// does not answer keeps its last report.
func TestSessionPollerTerminatedServer(t *testing.T) {
	ctx := context.Background()
	ipTerminating, ipServing := "127.0.0.24", "127.0.0.25"
	l, err := net.Listen("tcp", ipTerminating+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	terminatingServer := startAdminServer(t, ipTerminating, port, 2)
	servingServer := startAdminServer(t, ipServing, port, 5)

	reader := fake.NewClientBuilder().WithObjects(
		voicePod("ns", "gw", "old", ipTerminating),
		voicePod("ns", "gw", "new", ipServing),
	).Build()
	var old corev1.Pod
	if err := reader.Get(ctx, client.ObjectKey{Namespace: "ns", Name: "old"}, &old); err != nil {
		t.Fatal(err)
	}
	if err := reader.Delete(ctx, &old); err != nil {
		t.Fatal(err)
	}
	// Every pass polls every pod.
	poller := NewSessionPoller(reader, PollerOptions{AdminPort: port, Interval: time.Nanosecond, DrainingInterval: time.Nanosecond, Timeout: 300 * time.Millisecond},
		clock.RealClock{}, logr.Discard())
	t.Cleanup(poller.http.CloseIdleConnections)
	gw := types.NamespacedName{Namespace: "ns", Name: "gw"}

	if err := poller.pollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	reports := poller.Reports(gw)
	if reports[0].Sessions != 5 || reports[1].Sessions != 2 || !reports[1].Terminating {
		t.Fatalf("reports = %+v", reports)
	}

	stopAdminServer(t, terminatingServer)
	stopAdminServer(t, servingServer)
	poller.http.CloseIdleConnections()
	if err := poller.pollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	reports = poller.Reports(gw)
	if n := reports[0]; n.Name != "new" || n.Sessions != 5 || n.Stopped {
		t.Errorf("serving pod without an answer = %+v, want its last report kept", n)
	}
	if o := reports[1]; o.Name != "old" || o.Sessions != 0 || !o.Stopped || !o.Reported {
		t.Errorf("terminated pod = %+v, want stopped with no sessions", o)
	}
}

func stopAdminServer(t *testing.T, s *adminServer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.server.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	<-s.done
}
