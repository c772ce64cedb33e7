// Command image builds the voicegateway image without Docker, with
// go-containerregistry: the Dockerfile's final stage — /manager and
// /voice-server built by the Dockerfile's own go build command, the licence
// at /licenses/voicegateway/LICENSE, the nonroot user 65532, /manager as the
// entrypoint, the same labels — for each platform asked, as one multi-platform
// index. The output is reproducible: the same sources, version and base give
// the same digests (sorted tar entries, fixed times and owners, the build's
// own reproducible binaries). It writes an OCI image layout (--oci-layout),
// a tar of that layout that `ctr images import` loads (--oci-archive), or
// pushes to the tags' registry (--push, with the credentials of
// ~/.docker/config.json).
//
//	go run ./hack/image --version v0.1.0 --tag ghcr.io/voicegateway/voicegateway:v0.1.0 --oci-layout bin/image
//	go run ./hack/image --version v0.1.0 --tag registry.example.com/voicegateway:v0.1.0 --push
//	go run ./hack/image --pause --tag localhost/vgw-pause:local --base scratch --oci-archive pause.tar
//
// --base names the image the files go on: by default the Dockerfile's
// gcr.io/distroless/static:nonroot (pulled from its registry); "scratch"
// makes a minimal base layer instead (/etc/passwd and /etc/group with the
// nonroot user, /home/nonroot, /tmp) for machines that reach no registry,
// such as the local cluster of hack/cluster-up. It holds no CA
// certificates: the openai backend's TLS needs a base that has them.
// --pause builds the local cluster's pod sandbox image (hack/cluster/pause)
// instead of the voicegateway image.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	module = "github.com/voicegateway/voicegateway"
	// DefaultBase is the Dockerfile's final stage's base (a test keeps them
	// equal), by tag: see the Dockerfile for why, and how to pin a digest
	// in both places.
	DefaultBase = "gcr.io/distroless/static:nonroot"
	// scratchBase asks for the minimal base layer made here.
	scratchBase = "scratch"
	// nonRoot is distroless' nonroot user and group.
	nonRoot = 65532
)

// options are the command line.
type options struct {
	version, commit string
	platforms       []v1.Platform
	tags            []string
	base            string
	layoutDir       string
	archive         string
	push            bool
	pause           bool
	epoch           time.Time
}

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "vgw-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	var adds []mutate.IndexAddendum
	for _, p := range o.platforms {
		img, err := buildImage(ctx, o, root, filepath.Join(work, p.OS+"-"+p.Architecture), p)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", p.OS, p.Architecture, err)
		}
		platform := p
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &platform}})
	}
	index := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	digest, err := index.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "built %s for %s: %s\n", strings.Join(o.tags, ", "), platformList(o.platforms), digest)

	if o.layoutDir != "" {
		if err := writeLayout(o.layoutDir, index, o.tags); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote the OCI image layout %s\n", o.layoutDir)
	}
	if o.archive != "" {
		dir := filepath.Join(work, "layout")
		if err := writeLayout(dir, index, o.tags); err != nil {
			return err
		}
		if err := tarDir(dir, o.archive, o.epoch); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote the OCI archive %s (ctr images import --all-platforms %s)\n", o.archive, o.archive)
	}
	if o.push {
		for _, tag := range o.tags {
			ref, err := name.ParseReference(tag)
			if err != nil {
				return err
			}
			if err := remote.WriteIndex(ref, index, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
				return fmt.Errorf("pushing %s: %w", tag, err)
			}
			fmt.Fprintf(stdout, "pushed %s@%s\n", tag, digest)
		}
	}
	return nil
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: go run ./hack/image --tag REPO:TAG [--version V] [--platform LIST] [--base IMAGE|scratch]\n"+
			"         (--oci-layout DIR | --oci-archive FILE | --push) [--pause]\n\n"+
			"Builds the voicegateway image (the Dockerfile's final stage) without Docker, reproducibly.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var o options
	var platforms string
	var tags listFlag
	var epoch int64
	fs.StringVar(&o.version, "version", "dev", "version stamped into both binaries (server/version.Version), and the image's version label")
	fs.StringVar(&o.commit, "commit", "", "commit stamped into both binaries; empty means the checkout's HEAD, or unknown")
	fs.StringVar(&platforms, "platform", "linux/"+runtime.GOARCH, "comma-separated platforms, e.g. linux/amd64,linux/arm64")
	fs.Var(&tags, "tag", "image reference, repository:tag; repeat it for more tags")
	fs.StringVar(&o.base, "base", DefaultBase, `base image, or "scratch" for a minimal base layer made here (no registry needed, no CA certificates)`)
	fs.StringVar(&o.layoutDir, "oci-layout", "", "write an OCI image layout into this folder (replaced)")
	fs.StringVar(&o.archive, "oci-archive", "", "write a tar of the OCI image layout, as `ctr images import` loads it")
	fs.BoolVar(&o.push, "push", false, "push to the tags' registry")
	fs.BoolVar(&o.pause, "pause", false, "build the local cluster's pause image (hack/cluster/pause) instead")
	fs.Int64Var(&epoch, "source-date-epoch", envInt("SOURCE_DATE_EPOCH"), "time of every file and of the image, unix seconds (default $SOURCE_DATE_EPOCH, else 0)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.tags, o.epoch = tags, time.Unix(epoch, 0).UTC()
	if len(o.tags) == 0 {
		return o, errors.New("--tag is required")
	}
	for _, tag := range o.tags {
		if _, err := name.NewTag(tag); err != nil {
			return o, fmt.Errorf("--tag %s: %w", tag, err)
		}
	}
	if o.layoutDir == "" && o.archive == "" && !o.push {
		return o, errors.New("say where the image goes: --oci-layout, --oci-archive or --push")
	}
	for _, p := range strings.Split(platforms, ",") {
		platform, err := v1.ParsePlatform(strings.TrimSpace(p))
		if err != nil || platform.OS != "linux" || platform.Architecture == "" {
			return o, fmt.Errorf("--platform %q: want linux/ARCH", p)
		}
		o.platforms = append(o.platforms, *platform)
	}
	if o.commit == "" {
		o.commit = headCommit()
	}
	return o, nil
}

// buildImage builds one platform's image.
func buildImage(ctx context.Context, o options, root, dir string, p v1.Platform) (v1.Image, error) {
	base, err := baseImage(ctx, o, p)
	if err != nil {
		return nil, err
	}
	var files []file
	var cfg v1.Config
	if o.pause {
		if err := goBuild(ctx, root, dir, p, "-s -w", "./hack/cluster/pause"); err != nil {
			return nil, err
		}
		files = []file{{path: "pause", src: filepath.Join(dir, "pause"), mode: 0o755}}
		cfg = v1.Config{User: "65535:65535", Entrypoint: []string{"/pause"}}
	} else {
		// The Dockerfile's build command, to the byte (test/packaging
		// compares the binaries).
		ldflags := "-s -w -X " + module + "/server/version.Version=" + o.version + " -X " + module + "/server/version.Commit=" + o.commit
		if err := goBuild(ctx, root, dir, p, ldflags, "./cmd/manager", "./cmd/voice-server"); err != nil {
			return nil, err
		}
		files = []file{
			{path: "licenses/voicegateway/LICENSE", src: filepath.Join(root, "LICENSE"), mode: 0o644},
			{path: "manager", src: filepath.Join(dir, "manager"), mode: 0o755},
			{path: "voice-server", src: filepath.Join(dir, "voice-server"), mode: 0o755},
		}
		cfg = v1.Config{
			User:       strconv.Itoa(nonRoot) + ":" + strconv.Itoa(nonRoot),
			Entrypoint: []string{"/manager"},
			Labels:     Labels(o.version),
		}
	}
	layer, err := tarLayer(files, o.epoch)
	if err != nil {
		return nil, err
	}
	// The layer's media type follows the base's manifest: a Docker schema 2
	// base (as some registries serve distroless) gets a Docker layer, so
	// that no manifest mixes the two formats.
	layerType := types.OCILayer
	if mt, err := base.MediaType(); err == nil && mt == types.DockerManifestSchema2 {
		layerType = types.DockerLayer
	}
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, MediaType: layerType,
		History: v1.History{Created: v1.Time{Time: o.epoch}, CreatedBy: "hack/image", Comment: "voicegateway"}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: o.epoch}
	cf.Config.User, cf.Config.Entrypoint, cf.Config.Cmd = cfg.User, cfg.Entrypoint, nil
	if cf.Config.WorkingDir == "" {
		cf.Config.WorkingDir = "/"
	}
	if !slices.ContainsFunc(cf.Config.Env, func(e string) bool { return strings.HasPrefix(e, "PATH=") }) {
		cf.Config.Env = append(cf.Config.Env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	if cf.Config.Labels == nil {
		cf.Config.Labels = map[string]string{}
	}
	for k, v := range cfg.Labels {
		cf.Config.Labels[k] = v
	}
	return mutate.ConfigFile(img, cf)
}

// Labels are the Dockerfile's LABELs with its VERSION.
func Labels(version string) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "voicegateway",
		"org.opencontainers.image.description": "Kubernetes-native gateway for realtime voice AI sessions: the operator (/manager) and the voice server (/voice-server)",
		"org.opencontainers.image.source":      "https://github.com/voicegateway/voicegateway",
		"org.opencontainers.image.licenses":    "Apache-2.0",
		"org.opencontainers.image.version":     version,
	}
}

// baseImage is the image the files go on, for one platform.
func baseImage(ctx context.Context, o options, p v1.Platform) (v1.Image, error) {
	if o.base != scratchBase {
		ref, err := name.ParseReference(o.base)
		if err != nil {
			return nil, fmt.Errorf("--base: %w", err)
		}
		img, err := remote.Image(ref, remote.WithContext(ctx), remote.WithPlatform(p), remote.WithAuthFromKeychain(authn.DefaultKeychain))
		if err != nil {
			return nil, fmt.Errorf("pulling the base %s: %w", o.base, err)
		}
		return img, nil
	}
	home := strconv.Itoa(nonRoot)
	layer, err := tarLayer([]file{
		{path: "etc/group", data: "root:x:0:\nnobody:x:65534:\nnonroot:x:" + home + ":\n", mode: 0o644},
		{path: "etc/passwd", data: "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
			"nonroot:x:" + home + ":" + home + ":nonroot:/home/nonroot:/sbin/nologin\n", mode: 0o644},
		{path: "home/nonroot/", mode: 0o700, uid: nonRoot},
		{path: "tmp/", mode: 0o1777},
	}, o.epoch)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	return mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer,
		History: v1.History{Created: v1.Time{Time: o.epoch}, CreatedBy: "hack/image", Comment: "scratch base"}})
}

// goBuild runs go build for a platform into dir, static and trimmed.
func goBuild(ctx context.Context, root, dir string, p v1.Platform, ldflags string, pkgs ...string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	args := append([]string{"build", "-trimpath", "-ldflags", ldflags, "-o", dir + "/"}, pkgs...)
	cmd := exec.CommandContext(ctx, filepath.Join(runtime.GOROOT(), "bin", "go"), args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture, "GOFLAGS=-buildvcs=false")
	if p.Architecture == "arm" && p.Variant != "" {
		cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// file is one entry of a layer: a file from src or with data, or a folder
// (path ending in /). Owners are root unless uid is set.
type file struct {
	path string
	src  string
	data string
	mode int64
	uid  int
}

// tarLayer makes an uncompressed-tar layer (compressed by the library)
// with the entries sorted, their parent folders added, every time at epoch.
func tarLayer(files []file, epoch time.Time) (v1.Layer, error) {
	entries := map[string]file{}
	for _, f := range files {
		entries[f.path] = f
		for dir := filepath.Dir(strings.TrimSuffix(f.path, "/")); dir != "."; dir = filepath.Dir(dir) {
			if _, ok := entries[dir+"/"]; !ok {
				entries[dir+"/"] = file{path: dir + "/", mode: 0o755}
			}
		}
	}
	paths := make([]string, 0, len(entries))
	for p := range entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		f := entries[p]
		h := &tar.Header{Name: p, Mode: f.mode, Uid: f.uid, Gid: f.uid, ModTime: epoch, Format: tar.FormatPAX}
		var content []byte
		switch {
		case strings.HasSuffix(p, "/"):
			h.Typeflag = tar.TypeDir
		case f.src != "":
			data, err := os.ReadFile(f.src)
			if err != nil {
				return nil, err
			}
			content = data
		default:
			content = []byte(f.data)
		}
		if h.Typeflag != tar.TypeDir {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(content))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(content); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
}

// writeLayout writes the index into a fresh OCI image layout, once per tag,
// annotated with the names containerd and the OCI spec read.
func writeLayout(dir string, index v1.ImageIndex, tags []string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	for _, tag := range tags {
		ref, err := name.NewTag(tag)
		if err != nil {
			return err
		}
		if err := p.AppendIndex(index, layout.WithAnnotations(map[string]string{
			"io.containerd.image.name":          ref.Name(),
			"org.opencontainers.image.ref.name": ref.TagStr(),
		})); err != nil {
			return err
		}
	}
	return nil
}

// tarDir writes a folder as a tar with sorted entries and fixed times.
func tarDir(dir, out string, epoch time.Time) error {
	var paths []string
	if err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir {
			paths = append(paths, path)
		}
		return nil
	}); err != nil {
		return err
	}
	sort.Strings(paths)
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, path := range paths {
		info, err := os.Lstat(path)
		if err != nil {
			return errors.Join(err, f.Close())
		}
		rel, _ := filepath.Rel(dir, path)
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: epoch, Mode: 0o644, Format: tar.FormatPAX}
		if info.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o755
		} else {
			h.Typeflag, h.Size = tar.TypeReg, info.Size()
		}
		if err := tw.WriteHeader(h); err != nil {
			return errors.Join(err, f.Close())
		}
		if !info.IsDir() {
			data, err := os.ReadFile(path)
			if err != nil {
				return errors.Join(err, f.Close())
			}
			if _, err := tw.Write(data); err != nil {
				return errors.Join(err, f.Close())
			}
		}
	}
	if err := tw.Close(); err != nil {
		return errors.Join(err, f.Close())
	}
	return f.Close()
}

// repoRoot is the module's root: the folder of go.mod above the working
// directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(data, []byte("module "+module+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run it inside the repository: no go.mod of " + module + " above the working directory")
		}
		dir = parent
	}
}

// headCommit is the checkout's HEAD, or "unknown".
func headCommit() string {
	out, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func platformList(ps []v1.Platform) string {
	var names []string
	for _, p := range ps {
		names = append(names, p.String())
	}
	return strings.Join(names, ", ")
}

func envInt(key string) int64 {
	v, _ := strconv.ParseInt(os.Getenv(key), 10, 64)
	return v
}

// listFlag is a repeatable flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}
