// Package gnetlog sends gnet's own log lines to log/slog, so that the
// server's reactor and the bench's client reactor log through the same
// handler as the rest of Herald. gnet's informational chatter goes to
// Debug.
package gnetlog

import (
	"fmt"
	"log/slog"
)

// Logger adapts a *slog.Logger to gnet's logging interface; pass it to
// gnet.WithLogger.
type Logger struct{ Log *slog.Logger }

func (g Logger) Debugf(format string, args ...any) {
	g.Log.Debug("gnet: " + fmt.Sprintf(format, args...))
}
func (g Logger) Infof(format string, args ...any) {
	g.Log.Debug("gnet: " + fmt.Sprintf(format, args...))
}
func (g Logger) Warnf(format string, args ...any) {
	g.Log.Warn("gnet: " + fmt.Sprintf(format, args...))
}
func (g Logger) Errorf(format string, args ...any) {
	g.Log.Error("gnet: " + fmt.Sprintf(format, args...))
}
func (g Logger) Fatalf(format string, args ...any) {
	g.Log.Error("gnet: " + fmt.Sprintf(format, args...))
}
