// Package logging builds the voice server's single logger.
//
// The logger is made once in main and handed down as a logr.Logger, so no
// package owns global logging state: nothing here installs zap's globals or
// redirects the standard library's log, and nothing needs undoing except the
// final flush. Lines are JSON so that a log pipeline can index every
// key/value pair; --dev trades that for lines a person can read.
package logging

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Formats are the --log-format values: JSON lines for a log pipeline, or
// console lines a person reads. Levels are the --log-level values. The
// voice server and the operator take the same two flags.
var (
	Formats = []string{FormatJSON, FormatConsole}
	Levels  = []string{"debug", "info", "warn", "error"}
)

// The --log-format values.
const (
	FormatJSON    = "json"
	FormatConsole = "console"
)

// New returns the logger for the whole process, writing to stderr in the
// given format (json or console; empty means json) at the given level
// (debug, info, warn or error; empty means info), and the function that
// flushes it. The server calls flush last at shutdown, after every other
// part has stopped logging.
//
// logr's V(1) is zap's debug level, so --log-level=debug shows V(1) lines;
// deeper verbosity stays off.
func New(format, level string) (logr.Logger, func(), error) {
	return NewTo(format, level, os.Stderr)
}

// NewTo is New writing to w instead of stderr (the operator's tests read
// what it logs).
func NewTo(format, level string, w io.Writer) (logr.Logger, func(), error) {
	switch format {
	case FormatJSON, "":
		return newLogger(false, level, zapcore.Lock(zapcore.AddSync(w)))
	case FormatConsole:
		return newLogger(true, level, zapcore.Lock(zapcore.AddSync(w)))
	}
	return logr.Discard(), func() {}, fmt.Errorf("log format %q: choose one of %s", format, strings.Join(Formats, ", "))
}

func newLogger(dev bool, level string, out zapcore.WriteSyncer) (logr.Logger, func(), error) {
	minLevel, err := parseLevel(level)
	if err != nil {
		return logr.Discard(), func() {}, err
	}

	var encoder zapcore.Encoder
	opts := []zap.Option{
		zap.AddCaller(),
		// Stack traces only for the bugs DPanic flags: on every error they
		// would bury the log in traces of a routine failed client.
		zap.AddStacktrace(zapcore.DPanicLevel),
		zap.ErrorOutput(out),
	}
	if dev {
		encoderConfig := zap.NewDevelopmentEncoderConfig()
		encoder = zapcore.NewConsoleEncoder(encoderConfig)
		opts = append(opts, zap.Development())
	} else {
		encoderConfig := zap.NewProductionEncoderConfig()
		encoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
		encoderConfig.EncodeDuration = zapcore.StringDurationEncoder
		encoder = zapcore.NewJSONEncoder(encoderConfig)
	}

	core := zapcore.NewCore(encoder, out, minLevel)
	if !dev {
		// A flood of identical lines, such as failed authentication from a
		// client under attack, is thinned after the first 100 a second to
		// one in 100, so logging cannot become the outage. The sampler
		// counts per message and owns no goroutine.
		core = zapcore.NewSamplerWithOptions(core, time.Second, 100, 100)
	}
	zapLogger := zap.New(core, opts...)

	flush := func() {
		// Sync fails on stderr when it is a terminal or a pipe, which is
		// harmless; at exit there is no one left to tell anyway.
		_ = zapLogger.Sync()
	}
	return zapr.NewLogger(zapLogger), flush, nil
}

// parseLevel accepts the levels a running server may be set to. zap's
// dpanic, panic and fatal are refused: they would hide errors.
func parseLevel(level string) (zapcore.Level, error) {
	parsed, err := zapcore.ParseLevel(level)
	if err != nil || parsed > zapcore.ErrorLevel {
		return 0, fmt.Errorf("log level %q: choose one of debug, info, warn, error", level)
	}
	return parsed, nil
}
