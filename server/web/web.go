// Package web serves the demo page on the public port: a browser client
// that captures the microphone, streams it to the gateway over the binary
// audio fast path, plays the answer back, and moves to another server by
// itself when its server drains. The page is built on a small,
// dependency-free ES module (static/voicegateway-client.js) that users copy
// into their own apps; docs/web-client.md documents it.
//
// Everything is embedded in the binary and served from memory, with a
// strict Content-Security-Policy: the page runs only its own scripts and
// talks only to the origin that served it. It holds no secret: with
// authentication on it is handed a short-lived client token, never an API
// key.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// PathStatic is where the page's scripts and styles are served; the page
// itself is served at "/".
const PathStatic = "/static/"

// ContentSecurityPolicy allows the page its own scripts, styles and
// AudioWorklet module, and connections (WebSocket included: CSP Level 3's
// 'self' matches ws: and wss: on the same host and port) to its own origin
// only. No inline script or style, no eval, no framing.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"connect-src 'self'; img-src 'self' data:; media-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

//go:embed static
var staticFiles embed.FS

// contentTypes is fixed here rather than taken from the mime package, whose
// table the host's /etc/mime.types can change: a module script must be
// served with a JavaScript type or the browser refuses it.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// asset is one embedded file, ready to serve.
type asset struct {
	name        string
	body        []byte
	contentType string
	etag        string
}

// assets are read once: the embedded files never change while the binary runs.
var assets = mustLoadAssets()

func mustLoadAssets() map[string]asset {
	out := map[string]asset{}
	err := fs.WalkDir(staticFiles, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := staticFiles.ReadFile(p)
		if err != nil {
			return err
		}
		ctype, ok := contentTypes[path.Ext(p)]
		if !ok {
			return fmt.Errorf("web: no content type for %s", p)
		}
		sum := sha256.Sum256(body)
		name := strings.TrimPrefix(p, "static/")
		out[name] = asset{name: name, body: body, contentType: ctype, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		panic(err)
	}
	if _, ok := out["index.html"]; !ok {
		panic("web: static/index.html is missing")
	}
	return out
}

// Register adds the demo page to a public mux: the page at "/" and its
// files under PathStatic. Other paths stay the mux's (404, or 405 for a
// known path and another method).
func Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		serveAsset(w, r, assets["index.html"])
	})
	mux.HandleFunc("GET "+PathStatic+"{name}", func(w http.ResponseWriter, r *http.Request) {
		a, ok := assets[r.PathValue("name")]
		if !ok || a.name == "index.html" {
			http.NotFound(w, r)
			return
		}
		serveAsset(w, r, a)
	})
}

func serveAsset(w http.ResponseWriter, r *http.Request, a asset) {
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Permissions-Policy", "microphone=(self), camera=(), geolocation=()")
	// Revalidated on every load (cheap: the ETag answers 304), so a new
	// server version is picked up at once.
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
}
