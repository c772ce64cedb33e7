// Command compat is `make compat`: the official openai npm SDK (pinned in
// test/compat/package-lock.json) against a real voice server with the echo
// backend, as an app written for the OpenAI Realtime API would use it.
//
// The SDK opens Realtime sockets over wss:// only, so the voice server sits
// behind a TLS terminator here, as it does behind an ingress in a cluster: a
// certificate made for this run, trusted by Node through
// NODE_EXTRA_CA_CERTS. Node runs test/compat/compat.mjs, which prints one
// line per scenario with the events it saw and exits non-zero when one
// fails; so does this command.
//
//	go run ./hack/compat --dir test/compat
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/voicegateway/voicegateway/internal/childproc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "compat:", err)
		os.Exit(1)
	}
}

// apiKey is the key of this run's key file: long-lived, held by "the app's
// backend" (the Node side) only.
const apiKey = "vgw-compat-api-key-0123456789abcdef"

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("compat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bin := fs.String("voice-server", "", "the voice server binary; empty builds ./cmd/voice-server into a temporary directory")
	dir := fs.String("dir", filepath.Join("test", "compat"), "the Node suite, its dependencies installed (npm ci)")
	node := fs.String("node", "node", "the Node.js binary (20 or later)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "vgw-compat-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if *bin == "" {
		*bin = filepath.Join(tmp, "voice-server")
		build := exec.CommandContext(ctx, filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", *bin, "./cmd/voice-server")
		build.Stdout, build.Stderr = stdout, stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building the voice server: %w", err)
		}
	}
	keys := filepath.Join(tmp, "api-keys")
	if err := os.WriteFile(keys, []byte(apiKey+"\n"), 0o600); err != nil {
		return err
	}

	srv, err := startServer(*bin, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--backend", "echo",
		"--api-keys-file", keys, "--propagation-delay", "0s")
	if err != nil {
		return err
	}
	defer srv.Stop(30 * time.Second) // as Kubernetes would

	certFile := filepath.Join(tmp, "ca.pem")
	cert, err := selfSigned(certFile)
	if err != nil {
		return err
	}
	term, err := startTerminator(cert, srv.Public)
	if err != nil {
		return err
	}
	defer term.close()

	// Node 20 has its WebSocket behind a flag; later ones have it on (and
	// may not know the flag).
	nodeArgs := []string{"compat.mjs"}
	if exec.CommandContext(ctx, *node, "-e", "process.exit(typeof WebSocket === 'undefined' ? 1 : 0)").Run() != nil {
		nodeArgs = append([]string{"--experimental-websocket"}, nodeArgs...)
	}
	cmd := exec.CommandContext(ctx, *node, nodeArgs...)
	cmd.Dir = *dir
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Env = append(os.Environ(),
		"VGW_BASE_URL=https://localhost:"+term.port()+"/v1",
		"VGW_API_KEY="+apiKey,
		"NODE_EXTRA_CA_CERTS="+certFile,
		"NODE_NO_WARNINGS=1",
	)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("the Node suite failed: %w", err)
	}
	return nil
}

// startServer starts the voice server and waits for it to listen; it
// passes on what it logs that is not the ordinary session log.
func startServer(bin string, args ...string) (*childproc.Process, error) {
	srv, err := childproc.Start(context.Background(), exec.Command(bin, args...), childproc.Options{
		OnLine: func(line string, entry map[string]any) {
			// What went wrong, not the ordinary session log.
			if level := entry["level"]; entry == nil || level == "warn" || level == "error" {
				fmt.Fprintf(os.Stderr, "  [voice-server] %s\n", line)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("the voice server %s (build it with make build-voice-server): %w", bin, err)
	}
	return srv, nil
}

// selfSigned makes a certificate for localhost and 127.0.0.1, valid for
// this run, and writes it (the trust anchor Node is given) to certFile.
func selfSigned(certFile string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "voicegateway compat"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// terminator accepts TLS on loopback and forwards the plain bytes to the
// voice server, one TCP connection per client connection.
type terminator struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startTerminator(cert tls.Certificate, backend string) (*terminator, error) {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	t := &terminator{ln: ln, conns: map[net.Conn]struct{}{}}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				t.forward(c, backend)
			}()
		}
	}()
	return t, nil
}

func (t *terminator) port() string {
	_, port, _ := net.SplitHostPort(t.ln.Addr().String())
	return port
}

func (t *terminator) track(c net.Conn, add bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if add {
		t.conns[c] = struct{}{}
	} else {
		delete(t.conns, c)
	}
}

func (t *terminator) forward(client net.Conn, backend string) {
	defer client.Close()
	upstream, err := net.DialTimeout("tcp", backend, 5*time.Second)
	if err != nil {
		return
	}
	defer upstream.Close()
	t.track(client, true)
	t.track(upstream, true)
	defer t.track(client, false)
	defer t.track(upstream, false)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(upstream, client); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, upstream); done <- struct{}{} }()
	<-done
	// One side ended: end the other, and wait for its copy.
	_ = client.Close()
	_ = upstream.Close()
	<-done
}

// close stops accepting, cuts what is open and waits for every goroutine.
func (t *terminator) close() {
	_ = t.ln.Close()
	t.mu.Lock()
	for c := range t.conns {
		_ = c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
}
