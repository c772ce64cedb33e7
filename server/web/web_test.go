package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func newMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/client_tokens", func(http.ResponseWriter, *http.Request) {})
	Register(mux)
	return mux
}

func TestServesPageAndFiles(t *testing.T) {
	tests := map[string]struct {
		method string
		path   string
		// wantStatus is the HTTP status; wantType the Content-Type when 200.
		wantStatus int
		wantType   string
		// wantBody is a string the body must contain.
		wantBody string
	}{
		"page":             {"GET", "/", 200, "text/html; charset=utf-8", `<script type="module" src="/static/app.js">`},
		"page HEAD":        {"HEAD", "/", 200, "text/html; charset=utf-8", ""},
		"app":              {"GET", "/static/app.js", 200, "text/javascript; charset=utf-8", "window.__vgw"},
		"client module":    {"GET", "/static/voicegateway-client.js", 200, "text/javascript; charset=utf-8", "export class VoiceGatewayClient"},
		"audio module":     {"GET", "/static/voicegateway-audio.js", 200, "text/javascript; charset=utf-8", "export class AudioIO"},
		"worklet":          {"GET", "/static/pcm-worklet.js", 200, "text/javascript; charset=utf-8", "registerProcessor('vgw-capture'"},
		"style":            {"GET", "/static/style.css", 200, "text/css; charset=utf-8", ":root"},
		"unknown file":     {"GET", "/static/nope.js", 404, "", ""},
		"page by filename": {"GET", "/static/index.html", 404, "", ""},
		"directory":        {"GET", "/static/", 404, "", ""},
		"nested":           {"GET", "/static/a/b.js", 404, "", ""},
		"other path":       {"GET", "/index.html", 404, "", ""},
		"traversal":        {"GET", "/static/..%2fweb.go", 404, "", ""},
		"wrong method":     {"POST", "/", 405, "", ""},
		// The page must not shadow the API's own method errors.
		"API path, GET": {"GET", "/v1/client_tokens", 405, "", ""},
	}
	mux := newMux()
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.wantStatus {
				t.Fatalf("%s %s = %d, want %d", tc.method, tc.path, rec.Code, tc.wantStatus)
			}
			if tc.wantStatus != 200 {
				return
			}
			h := rec.Header()
			if got := h.Get("Content-Type"); got != tc.wantType {
				t.Errorf("Content-Type = %q, want %q", got, tc.wantType)
			}
			for header, want := range map[string]string{
				"Content-Security-Policy": ContentSecurityPolicy,
				"X-Content-Type-Options":  "nosniff",
				"Referrer-Policy":         "no-referrer",
				"Cache-Control":           "no-cache",
			} {
				if got := h.Get(header); got != want {
					t.Errorf("%s = %q, want %q", header, got, want)
				}
			}
			if h.Get("ETag") == "" {
				t.Error("no ETag")
			}
			if !strings.Contains(rec.Body.String(), tc.wantBody) {
				t.Errorf("body does not contain %q", tc.wantBody)
			}
		})
	}
}

func TestRevalidatesWithETag(t *testing.T) {
	mux := newMux()
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/static/app.js", nil))
	etag := rec.Header().Get("ETag")
	req := httptest.NewRequest("GET", "/static/app.js", nil)
	req.Header.Set("If-None-Match", etag)
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotModified {
		t.Fatalf("If-None-Match with the current ETag = %d, want 304", rec.Code)
	}
}

// TestCSPStrict guards the policy: the page may run only its own files.
func TestCSPStrict(t *testing.T) {
	for _, forbidden := range []string{"'unsafe-inline'", "'unsafe-eval'", "*", "blob:", "http:", "https:"} {
		if strings.Contains(ContentSecurityPolicy, forbidden) {
			t.Errorf("policy allows %s: %s", forbidden, ContentSecurityPolicy)
		}
	}
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(ContentSecurityPolicy, want) {
			t.Errorf("policy lacks %s", want)
		}
	}
}

// TestPageFitsPolicy: everything the page loads is served, and nothing in
// it is inline, which the policy would block.
func TestPageFitsPolicy(t *testing.T) {
	page := string(assets["index.html"].body)
	for _, re := range []string{`<script(?:\s[^>]*)?>\s*[^<\s]`, `\sstyle=`, `\son[a-z]+=`, `<style`} {
		if m := regexp.MustCompile(re).FindString(page); m != "" {
			t.Errorf("index.html has inline code the policy blocks: %q", m)
		}
	}
	refs := regexp.MustCompile(`(?:src|href)="/static/([^"]+)"`).FindAllStringSubmatch(page, -1)
	imports := regexp.MustCompile(`(?:from |new URL\()'\./([^']+)'`)
	for name, a := range assets {
		if strings.HasSuffix(name, ".js") {
			refs = append(refs, imports.FindAllStringSubmatch(string(a.body), -1)...)
		}
	}
	if len(refs) < 5 {
		t.Fatalf("found only %d references; the patterns are stale", len(refs))
	}
	for _, ref := range refs {
		if _, ok := assets[ref[1]]; !ok {
			t.Errorf("%s is referenced but not served", ref[1])
		}
	}
}

// TestClientModuleHasNoDependencies: the module users copy stands alone.
func TestClientModuleHasNoDependencies(t *testing.T) {
	body := string(assets["voicegateway-client.js"].body)
	if m := regexp.MustCompile(`(?m)^\s*import\s|import\(`).FindString(body); m != "" {
		t.Errorf("voicegateway-client.js imports something: %q", m)
	}
	res := httptest.NewRecorder()
	newMux().ServeHTTP(res, httptest.NewRequest("GET", "/static/voicegateway-client.js", nil))
	got, _ := io.ReadAll(res.Body)
	if string(got) != body {
		t.Error("served module differs from the embedded file")
	}
}
