package main

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/herald-ws/herald/engine"
)

func TestAllowedOrigins(t *testing.T) {
	var origins originList
	if err := origins.Set("https://app.example.com, https://*.example.org"); err != nil {
		t.Fatal(err)
	}
	h := startTestHerald(t, heraldConfig{Engine: engine.Config{CheckOrigin: origins.check()}})
	tests := []struct {
		origin string
		status int
	}{
		{"", 101}, // not a browser: nothing to check
		{"https://app.example.com", 101},
		{"HTTPS://APP.EXAMPLE.COM", 101},
		{"https://live.example.org", 101},
		{"https://example.org", 403}, // the wildcard means subdomains
		{"https://app.example.com.evil.net", 403},
		{"http://app.example.com", 403}, // another scheme is another origin
		{"https://evil.example", 403},
	}
	for _, tt := range tests {
		header := http.Header{}
		if tt.origin != "" {
			header.Set("Origin", tt.origin)
		}
		conn, resp, err := websocket.DefaultDialer.Dial("ws://"+h.srv.Addr()+"/ws?channel=o", header)
		if conn != nil {
			conn.Close()
		}
		if resp == nil || resp.StatusCode != tt.status {
			t.Errorf("Origin %q: got %v (%v), want %d", tt.origin, resp, err, tt.status)
		}
	}
}

func TestAllowedOriginsFlagRefusesNonOrigins(t *testing.T) {
	for _, bad := range []string{"app.example.com", "https://app.example.com/path", "https://"} {
		var stderr bytes.Buffer
		if code := run([]string{"serve", "--allowed-origins", bad}, &bytes.Buffer{}, &stderr); code != 2 {
			t.Errorf("--allowed-origins %q: exit %d, want 2 (usage error); stderr %q", bad, code, stderr.String())
		}
	}
}
