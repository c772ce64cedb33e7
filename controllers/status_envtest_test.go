package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/controllers"
	"github.com/voicegateway/voicegateway/internal/testenv"
	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/admin/adminapi"
)

var (
	voiceServerOnce sync.Once
	voiceServerPath string
	voiceServerErr  error
)

// voiceServerBinary builds cmd/voice-server once per test run.
func voiceServerBinary(t *testing.T) string {
	t.Helper()
	voiceServerOnce.Do(func() {
		root, err := testenv.RepoRoot()
		if err != nil {
			voiceServerErr = err
			return
		}
		voiceServerPath = filepath.Join(scratchDir, "voice-server")
		cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", voiceServerPath, "./cmd/voice-server")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			voiceServerErr = fmt.Errorf("go build ./cmd/voice-server: %v\n%s", err, out)
		}
	})
	if voiceServerErr != nil {
		t.Fatal(voiceServerErr)
	}
	return voiceServerPath
}

// voiceServer is a real voice server process on a loopback address, playing
// the part of one pod: the operator reaches its admin port at the pod IP.
type voiceServer struct {
	ip, public, admin string
	cmd               *exec.Cmd
	exited            chan struct{}
}

// startVoiceServer runs a voice server whose fleet Secret is mounted at
// fleetDir, as the operator's pods have it.
func startVoiceServer(t *testing.T, ip string, adminPort int, fleetDir string) *voiceServer {
	t.Helper()
	bin := voiceServerBinary(t)
	publicPort := freePort(t, ip)
	s := &voiceServer{
		ip:     ip,
		public: net.JoinHostPort(ip, strconv.Itoa(publicPort)),
		admin:  net.JoinHostPort(ip, strconv.Itoa(adminPort)),
		exited: make(chan struct{}),
	}
	s.cmd = exec.Command(bin,
		"--listen", s.public, "--admin-listen", s.admin,
		"--insecure-no-auth", "--backend", "echo", "--log-level", "warn", "--fleet-secret-dir", fleetDir,
		"--drain-timeout", "28s", "--exit-margin", "2s", "--propagation-delay", "0s", "--notify-window", "1s")
	logFile, err := os.Create(filepath.Join(t.TempDir(), "voice-server-"+ip+".log"))
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = s.cmd.Wait()
		_ = logFile.Close()
		close(s.exited)
	}()
	t.Cleanup(s.stop)
	testkit.Eventually(t, 20*time.Second, func() error {
		select {
		case <-s.exited:
			return errors.New("the voice server exited at start")
		default:
		}
		ready, err := s.adminAPI(t, "").Ready(context.Background())
		if err != nil {
			return err
		}
		if !ready {
			return errors.New("not ready")
		}
		return nil
	})
	return s
}

// adminAPI is the contract's client of the server's admin port, as the
// operator's poller and the preStop hook use it; token "" sends none.
func (s *voiceServer) adminAPI(t *testing.T, token string) *adminapi.Client {
	t.Helper()
	api, err := adminapi.NewClient(s.admin, adminapi.ClientOptions{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return api
}

// writeFleetDir writes a fleet Secret's data as the kubelet mounts it.
func writeFleetDir(t *testing.T, data map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, value := range data {
		if err := os.WriteFile(filepath.Join(dir, name), value, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// stop sends SIGTERM twice (the second means "now"), then kills.
func (s *voiceServer) stop() {
	for range 2 {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// session is one client connection held open, with its reader.
type session struct {
	conn *websocket.Conn
	done chan struct{}
}

func (s *voiceServer) openSessions(t *testing.T, n int) []*session {
	t.Helper()
	sessions := make([]*session, 0, n)
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, resp, err := websocket.Dial(ctx, "ws://"+s.public+"/v1/realtime", &websocket.DialOptions{
			HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		})
		cancel()
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
		sess := &session{conn: conn, done: make(chan struct{})}
		// The reader owns the connection's reads until it closes.
		go func() {
			defer close(sess.done)
			for {
				if _, _, err := conn.Read(context.Background()); err != nil {
					return
				}
			}
		}()
		sessions = append(sessions, sess)
		t.Cleanup(sess.close)
	}
	return sessions
}

func (s *session) close() {
	_ = s.conn.Close(websocket.StatusNormalClosure, "done")
	<-s.done
}

// freePort finds a port free on ip (and, for the admin port, on others).
func freePort(t *testing.T, ip string, others ...string) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		ok := true
		var held []net.Listener
		for _, other := range others {
			lo, err := net.Listen("tcp", net.JoinHostPort(other, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			held = append(held, lo)
		}
		for _, lo := range held {
			_ = lo.Close()
		}
		_ = l.Close()
		if ok {
			return port
		}
	}
	t.Fatal("no port free on every address")
	return 0
}

// createPod plays the Deployment controller and the kubelet: a pod of the
// gateway, running at ip. A finalizer keeps it visible once deleted, as a
// pod stays while its containers drain.
func createPod(t *testing.T, namespace, gateway, name, ip string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace,
			Name:      name,
			Labels: map[string]string{
				controllers.LabelName:      "voicegateway",
				controllers.LabelInstance:  gateway,
				controllers.LabelManagedBy: controllers.ManagedBy,
			},
			Finalizers: []string{"voicegateway.dev/test-hold"},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "voice-server", Image: testImage}}},
	}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{
		Phase:      corev1.PodRunning,
		PodIP:      ip,
		PodIPs:     []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
	}
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { releasePod(t, pod) })
	return pod
}

// releasePod removes the test's finalizer so a deleted pod goes away.
func releasePod(t *testing.T, pod *corev1.Pod) {
	ctx := context.Background()
	var current corev1.Pod
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), &current); err != nil {
		return
	}
	patch := client.MergeFrom(current.DeepCopy())
	current.Finalizers = nil
	if err := k8s.Patch(ctx, &current, patch); err != nil {
		t.Errorf("releasing pod %s: %v", pod.Name, err)
	}
}

// TestStatusReportsLiveSessionsAndDrains runs two real voice servers on
// loopback addresses standing for two pods' IPs, sharing a fleet Secret
// that the VoiceGateway names, and a third "pod" whose admin port accepts
// connections but never answers: sessions opened on the servers appear in
// status.sessions without the silent pod holding anything up; a pod that
// is deleted and whose server drains (POST /drain with the admin token, as
// its preStop hook does) appears in status.draining with its sessions and
// the server's deadline, and leaves it once its sessions end; the
// conditions and events follow.
func TestStatusReportsLiveSessionsAndDrains(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	ipA, ipB, ipSilent := "127.0.0.11", "127.0.0.12", "127.0.0.13"
	adminPort := freePort(t, ipA, ipB, ipSilent)
	silent, err := net.Listen("tcp", net.JoinHostPort(ipSilent, strconv.Itoa(adminPort)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = silent.Close() })

	fleetData := createFleetSecret(t, namespace, "live-keys", false)
	adminToken := strings.TrimSpace(string(fleetData["admin-token"]))
	fleetDir := writeFleetDir(t, fleetData)
	serverA := startVoiceServer(t, ipA, adminPort, fleetDir)
	serverB := startVoiceServer(t, ipB, adminPort, fleetDir)
	startOperator(t, namespace, managerOptions{poller: controllers.PollerOptions{
		AdminPort:        adminPort,
		Interval:         300 * time.Millisecond,
		DrainingInterval: 100 * time.Millisecond,
		Timeout:          500 * time.Millisecond,
	}})

	gw := newGateway(namespace, "live")
	gw.Spec.Auth.FleetSecretRef = &vgv1.LocalSecretRef{Name: "live-keys"}
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(gw)
	objs := waitForObjects(t, key)

	podA := createPod(t, namespace, gw.Name, "live-a", ipA)
	createPod(t, namespace, gw.Name, "live-b", ipB)
	createPod(t, namespace, gw.Name, "live-silent", ipSilent)

	sessionsA := serverA.openSessions(t, 3)
	serverB.openSessions(t, 2)
	testkit.Eventually(t, 15*time.Second, func() error {
		st := getGateway(t, key).Status
		if st.Sessions != 5 || len(st.Draining) != 0 || st.DrainingSessions != 0 {
			return fmt.Errorf("sessions %d draining %+v, want 5 and none", st.Sessions, st.Draining)
		}
		return nil
	})

	// The Deployment controller's part: every pod updated and ready.
	deployment := objs.deployment.DeepCopy()
	deployment.Status = deploymentStatus(deployment.Generation, 2, 2, 2)
	if err := k8s.Status().Update(ctx, deployment); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		gw := getGateway(t, key)
		if gw.Status.Ready != "2/2" {
			return fmt.Errorf("ready %q", gw.Status.Ready)
		}
		return checkConditions(gw, map[string]string{
			vgv1.ConditionAvailable:   "True/" + controllers.ReasonAllPodsReady,
			vgv1.ConditionProgressing: "False/" + controllers.ReasonComplete,
			vgv1.ConditionDegraded:    "False/" + controllers.ReasonAsExpected,
		})
	})

	// Pod A is terminated: the API server marks it, the kubelet would run
	// its preStop hook, which POSTs /drain with the fleet's admin token.
	if err := k8s.Delete(ctx, podA); err != nil {
		t.Fatal(err)
	}
	drainCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	drained, err := serverA.adminAPI(t, adminToken).Drain(drainCtx)
	cancel()
	if err != nil || drained.DrainDeadline == nil {
		t.Fatalf("POST /drain: %+v, %v; want the drain's deadline", drained, err)
	}
	drainDeadline := *drained.DrainDeadline
	testkit.Eventually(t, 10*time.Second, func() error {
		gw := getGateway(t, key)
		st := gw.Status
		if len(st.Draining) != 1 {
			return fmt.Errorf("draining = %+v, want pod live-a", st.Draining)
		}
		d := st.Draining[0]
		if d.Pod != "live-a" || d.Sessions != 3 || d.Deadline == nil || d.Since == nil ||
			!d.Deadline.Time.Equal(drainDeadline.Truncate(time.Second)) {
			return fmt.Errorf("draining = %+v, want live-a with 3 sessions and deadline %s", d, drainDeadline)
		}
		if st.Sessions != 5 || st.DrainingSessions != 3 {
			return fmt.Errorf("sessions %d draining sessions %d, want 5 and 3", st.Sessions, st.DrainingSessions)
		}
		return checkConditions(gw, map[string]string{vgv1.ConditionProgressing: "True/" + controllers.ReasonDraining})
	})
	waitForEvent(t, namespace, controllers.EventDrainStarted, "Pod live-a began draining with 3 sessions")

	// The callers hang up and reconnect elsewhere: pod A has drained.
	for _, s := range sessionsA {
		s.close()
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		gw := getGateway(t, key)
		st := gw.Status
		if len(st.Draining) != 0 || st.Sessions != 2 || st.DrainingSessions != 0 {
			podA, err := serverA.adminAPI(t, "").Status(ctx)
			return fmt.Errorf("sessions %d draining %+v, want 2 and none (pod a's /status: %+v, %v)", st.Sessions, st.Draining, podA, err)
		}
		return checkConditions(gw, map[string]string{vgv1.ConditionProgressing: "False/" + controllers.ReasonComplete})
	})
	// Whether the poller sees the server with no sessions or already gone
	// (it exits once its last session ends) is a race; both finish the
	// drain.
	waitForEvent(t, namespace, controllers.EventDrainFinished, "Pod live-a ")
}

func deploymentStatus(generation int64, replicas, ready, updated int32) appsv1.DeploymentStatus {
	return appsv1.DeploymentStatus{
		ObservedGeneration: generation,
		Replicas:           replicas,
		ReadyReplicas:      ready,
		AvailableReplicas:  ready,
		UpdatedReplicas:    updated,
	}
}

// waitForEvent waits for an event about the VoiceGateway with the reason
// and a note that starts with prefix.
func waitForEvent(t *testing.T, namespace, reason, prefix string) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, func() error {
		var events eventsv1.EventList
		if err := k8s.List(context.Background(), &events, client.InNamespace(namespace)); err != nil {
			return err
		}
		var seen []string
		for _, e := range events.Items {
			if e.Regarding.Kind == "VoiceGateway" && e.Reason == reason && strings.HasPrefix(e.Note, prefix) {
				return nil
			}
			seen = append(seen, e.Reason+": "+e.Note)
		}
		slices.Sort(seen)
		return fmt.Errorf("no %s event %q among %q", reason, prefix, seen)
	})
}
