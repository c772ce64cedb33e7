package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/voicegateway/voicegateway/internal/boundedfile"
	"github.com/voicegateway/voicegateway/server/admin/adminapi"
	"github.com/voicegateway/voicegateway/server/auth"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/fleet"
)

// subcommands run instead of the server when named as the first argument.
var subcommands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"drain":        runDrain,
	"fleet-secret": runFleetSecret,
}

// runDrain is the preStop hook: `voice-server drain --config FILE` begins
// the drain of the server running in the same container and returns once
// that server refuses new sessions (after its propagation delay), so that
// the kubelet's SIGTERM follows only then. It reads the server's own
// settings, so that the admin address and the admin token come from where
// the server takes them, and it needs no shell in the image.
func runDrain(args []string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, "Usage: voice-server drain [the server's own settings, e.g. --config FILE]\n\n"+
			"Begins the drain of the voice server running with these settings (POST /drain on its\n"+
			"admin port, with the admin token of its fleet Secret) and returns once it refuses new\n"+
			"sessions. The preStop hook of the operator's pods.")
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "voice-server drain: %v\n", err)
		return 2
	}
	if cfg.FleetSecretDir == "" {
		fmt.Fprintln(stderr, "voice-server drain: the admin endpoints need the admin token of a fleet Secret (--fleet-secret-dir); without one, send the server SIGTERM")
		return 2
	}
	data, err := boundedfile.Read(filepath.Join(cfg.FleetSecretDir, fleet.AdminTokenFile), fleet.MaxFileSize)
	if err != nil {
		fmt.Fprintf(stderr, "voice-server drain: %v\n", err)
		return 1
	}
	token, err := fleet.ParseAdminToken(data)
	if err != nil {
		fmt.Fprintf(stderr, "voice-server drain: %v\n", err)
		return 1
	}
	address, err := localAdminAddress(cfg.AdminListen)
	if err != nil {
		fmt.Fprintf(stderr, "voice-server drain: --admin-listen: %v\n", err)
		return 2
	}
	admin, err := adminapi.NewClient(address, adminapi.ClientOptions{Token: token})
	if err != nil {
		fmt.Fprintf(stderr, "voice-server drain: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), drainHookTimeout(cfg))
	defer cancel()
	status, err := admin.Drain(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "voice-server drain: %v\n", err)
		return 1
	}
	deadline := ""
	if status.DrainDeadline != nil {
		deadline = status.DrainDeadline.Format(time.RFC3339)
	}
	fmt.Fprintf(stdout, "drain begun: phase %s, %d sessions, deadline %s\n", status.Phase, status.Sessions, deadline)
	return 0
}

// drainHookTimeout bounds the hook's wait: the server answers once the
// propagation delay has passed, so a wait much longer than that means it
// hangs, and the kubelet's SIGTERM (which drains too) should come while
// the calls still have their time. It never exceeds the drain timeout.
func drainHookTimeout(cfg config.Config) time.Duration {
	return min(cfg.Drain.PropagationDelay+10*time.Second, cfg.Drain.Timeout)
}

// localAdminAddress is where a process in the same network namespace
// reaches an admin listener: its own host, or IPv4 loopback for a listener
// on every interface. Go listens on [::] dual-stack where it can and on
// IPv4 alone where IPv6 is off (many pods), so 127.0.0.1 reaches it either
// way, while ::1 would not in an IPv4-only pod.
func localAdminAddress(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", err
	}
	if host == "" {
		return net.JoinHostPort("127.0.0.1", port), nil
	}
	if addr, err := netip.ParseAddr(host); err == nil && addr.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", port), nil
	}
	return net.JoinHostPort(host, port), nil
}

// runFleetSecret writes or rotates a fleet Secret's files in a directory,
// for a user who brings their own Secret (spec.auth.fleetSecretRef), for a
// fleet run without the operator, and for local runs and tests:
//
//	voice-server fleet-secret init --dir DIR [--api-key]
//	voice-server fleet-secret rotate --dir DIR [--activation 2m] [--retain 11m5s]
func runFleetSecret(args []string, stdout, stderr io.Writer) int {
	usage := "Usage:\n" +
		"  voice-server fleet-secret init --dir DIR [--api-key]\n" +
		"      writes token-keys.json, admin-token and fleet-key (and api-keys) into DIR; refuses to\n" +
		"      overwrite. Then: kubectl create secret generic NAME --from-file=DIR\n" +
		"  voice-server fleet-secret rotate --dir DIR [--activation D] [--retain D]\n" +
		"      adds a signing key that signs after --activation and retires the others --retain\n" +
		"      after that; rewrites token-keys.json in place (docs/operations.md, \"Rotation\")\n"
	if len(args) == 0 || (args[0] != "init" && args[0] != "rotate") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprint(stderr, usage)
		return 2
	}
	verb := args[0]
	fs := flag.NewFlagSet("fleet-secret "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "directory of the fleet Secret's files")
	withAPIKey := fs.Bool("api-key", false, "init: also generate an api-keys file with one API key")
	rotation := fleet.DefaultRotation
	fs.DurationVar(&rotation.Activation, "activation", rotation.Activation, "rotate: how long the new key only verifies before it signs; longer than the Secret takes to reach every pod")
	fs.DurationVar(&rotation.Retain, "retain", rotation.Retain, "rotate: how long the replaced keys verify after the new key starts signing; at least the longest client-token lifetime")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *dir == "" || fs.NArg() > 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if err := checkRotation(rotation); err != nil {
		fmt.Fprintf(stderr, "voice-server fleet-secret %s: %v\n", verb, err)
		return 2
	}
	var err error
	if verb == "init" {
		err = initFleetDir(*dir, *withAPIKey, stdout)
	} else {
		err = rotateFleetDir(*dir, rotation, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "voice-server fleet-secret %s: %v\n", verb, err)
		return 1
	}
	return 0
}

// checkRotation refuses timings that would break live tokens: a replaced
// key must verify as long as a token it signed may live.
func checkRotation(r fleet.Rotation) error {
	minRetain := config.MaxClientTokenTTL + auth.IssuedAtSkew
	switch {
	case r.Activation < 0:
		return fmt.Errorf("--activation %s must not be negative", r.Activation)
	case r.Retain < minRetain:
		return fmt.Errorf("--retain %s is shorter than a client token may live (%s): tokens signed with the replaced key would be refused", r.Retain, minRetain)
	}
	return nil
}

func initFleetDir(dir string, withAPIKey bool, stdout io.Writer) (err error) {
	data, err := fleet.Generate(nil, time.Now(), withAPIKey)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// Each file is created exclusively, so that an existing Secret is
	// never overwritten; on any failure the files made so far go again.
	var made []string
	defer func() {
		if err != nil {
			for _, path := range made {
				_ = os.Remove(path)
			}
		}
	}()
	for name, content := range data {
		path := filepath.Join(dir, name)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists; a fleet Secret is made once (rotate its signing keys with `fleet-secret rotate`)", path)
		}
		if err != nil {
			return err
		}
		made = append(made, path)
		_, err = f.Write(content)
		if closeErr := f.Close(); err == nil {
			err = closeErr
		}
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "wrote a fleet Secret into %s\n  kubectl create secret generic NAME --from-file=%s\n", dir, dir)
	return nil
}

func rotateFleetDir(dir string, rotation fleet.Rotation, stdout io.Writer) error {
	path := filepath.Join(dir, fleet.TokenKeysFile)
	data, err := boundedfile.Read(path, fleet.MaxFileSize)
	if err != nil {
		return err
	}
	keys, err := fleet.ParseTokenKeys(data)
	if err != nil {
		return err
	}
	rotated, err := keys.Rotate(nil, time.Now(), rotation)
	if err != nil {
		return err
	}
	if err := rotated.Validate(); err != nil {
		return err
	}
	out, err := rotated.Marshal()
	if err != nil {
		return err
	}
	// Replaced whole, through a temporary file of its own in the same
	// directory, so that a server polling the file never reads half of it.
	tmp, err := os.CreateTemp(dir, ".token-keys-*.json")
	if err != nil {
		return err
	}
	_, err = tmp.Write(out)
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	fmt.Fprintf(stdout, "new signing key %s signs from %s\n", rotated.Keys[0].ID, rotated.Keys[0].SignFrom.Format(time.RFC3339))
	for _, key := range rotated.Keys[1:] {
		fmt.Fprintf(stdout, "  key %s verifies until %s\n", key.ID, key.VerifyUntil.Format(time.RFC3339))
	}
	return nil
}
