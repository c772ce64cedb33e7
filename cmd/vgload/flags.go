package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"
)

// The subcommands share their flags in groups: each group registers its
// flags on a subcommand's flag set, checks them once parsed, and turns
// them into what the subcommand runs with.

// targetFlags say where sessions go and with what credential.
type targetFlags struct {
	urls        listFlag
	defaultURL  string
	apiKey      string
	allowRemote bool
}

// register adds --url (repeatable when repeat is set), --api-key (what the
// key is for in keyUsage) and --allow-remote.
func (f *targetFlags) register(fs *flag.FlagSet, defaultURL, urlUsage, keyUsage string, repeat bool) {
	f.defaultURL = defaultURL
	if repeat {
		fs.Var(&f.urls, "url", urlUsage+"; repeat it to give the servers a draining session moves to, in turn (default "+defaultURL+")")
	} else {
		fs.Func("url", urlUsage+" (default "+defaultURL+")", func(v string) error {
			f.urls = listFlag{v}
			return nil
		})
	}
	fs.StringVar(&f.apiKey, "api-key", os.Getenv("VGLOAD_API_KEY"), keyUsage+" (env VGLOAD_API_KEY)")
	fs.BoolVar(&f.allowRemote, "allow-remote", false, "allow non-loopback targets (never needed on one machine)")
}

// targets returns the URLs given, or the default, once each (and extra
// addresses, e.g. the admin port's) has passed the loopback check.
func (f *targetFlags) targets(extra ...string) ([]string, error) {
	urls := []string(f.urls)
	if len(urls) == 0 {
		urls = []string{f.defaultURL}
	}
	for _, t := range append(urls, extra...) {
		if t == "" {
			continue
		}
		if err := checkTarget(t, f.allowRemote); err != nil {
			return nil, err
		}
	}
	return urls, nil
}

// loadFlags say how many sessions, how fast they connect and how long the
// steady state lasts.
type loadFlags struct {
	sessions int
	ramp     time.Duration
	duration time.Duration
}

func (f *loadFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.sessions, "sessions", 100, "concurrent sessions")
	fs.DurationVar(&f.ramp, "ramp", 5*time.Second, "spread the connects evenly over this time")
	fs.DurationVar(&f.duration, "duration", 30*time.Second, "steady state after the ramp")
}

func (f *loadFlags) check() error {
	if f.sessions < 1 || f.duration <= 0 || f.ramp < 0 {
		return errors.New("--sessions and --duration must be positive, --ramp not negative")
	}
	return nil
}

// talkFlags say how each session talks and what it does when the server
// drains.
type talkFlags struct {
	audio       string
	sampleRate  int
	commitEvery int
	lateAfter   time.Duration
	settle      time.Duration
	reconnect   bool
}

func (f *talkFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.audio, "audio", "binary", "audio transport: binary (?audio=binary) or base64 (JSON events)")
	fs.IntVar(&f.sampleRate, "sample-rate", 24000, "PCM16 sample rate, 16000 or 24000; must match the server's --sample-rate")
	fs.IntVar(&f.commitEvery, "commit-every", 50, "frames per input_audio_buffer.commit: 50 is a 1 s turn, streamed back 20 ms at a time; 1 makes every frame a turn (7 server events per frame, the worst case); 0 never commits, for an upstream that echoes each frame as it arrives (openaiupstream)")
	fs.DurationVar(&f.lateAfter, "late-after", 40*time.Millisecond, "an echo that takes longer than this counts as late")
	fs.DurationVar(&f.settle, "settle", 2*time.Second, "at the end, wait this long for outstanding echoes before hanging up")
	fs.BoolVar(&f.reconnect, "reconnect", true, "on gateway.draining (and on 1001/1012/1013 closes) reconnect, to the next --url, with jittered backoff")
}

func (f *talkFlags) check() error {
	if f.audio != "binary" && f.audio != "base64" {
		return fmt.Errorf("--audio must be binary or base64, not %q", f.audio)
	}
	if f.sampleRate != 16000 && f.sampleRate != 24000 {
		return errors.New("--sample-rate must be 16000 or 24000")
	}
	if f.commitEvery < 0 {
		return errors.New("--commit-every must be 0 (never) or positive")
	}
	return nil
}

// serverFlags name the gateway process being measured.
type serverFlags struct {
	admin     string
	tokenFile *string
	pid       int
}

// register adds --admin (with its default and what it is for),
// --admin-token-file and, with withPID, --server-pid.
func (f *serverFlags) register(fs *flag.FlagSet, adminDefault, adminUsage string, withPID bool) {
	fs.StringVar(&f.admin, "admin", adminDefault, "the gateway's admin address (host:port): "+adminUsage)
	f.tokenFile = adminTokenFlag(fs)
	if withPID {
		fs.IntVar(&f.pid, "server-pid", 0, "the gateway's process id: its CPU (and RSS) are read from /proc")
	}
}

// adminURL is the admin address as a URL for the loopback check; empty
// when none was given.
func (f *serverFlags) adminURL() string {
	if f.admin == "" {
		return ""
	}
	return httpURL(f.admin)
}

// client returns the admin client, nil without --admin.
func (f *serverFlags) client(allowRemote bool) (*adminClient, error) {
	return newAdminClient(f.admin, *f.tokenFile, allowRemote)
}

// reportFlags say where a report goes.
type reportFlags struct {
	json, markdown string
}

func (f *reportFlags) register(fs *flag.FlagSet, table string) {
	fs.StringVar(&f.json, "json", "", "write the JSON report to this file (- for stdout)")
	fs.StringVar(&f.markdown, "markdown", "", "append this run's row of the "+table+" table to this file")
}

// rowFlags are the report flags of the load subcommands, which also label
// their markdown row and may stay quiet.
type rowFlags struct {
	reportFlags
	label string
	quiet bool
}

func (f *rowFlags) register(fs *flag.FlagSet, table string) {
	f.reportFlags.register(fs, table)
	fs.StringVar(&f.label, "label", "", "text for the markdown row's first column (default: the session count)")
	fs.BoolVar(&f.quiet, "quiet", false, "no human summary on stdout")
}
