package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nkeys"

	"github.com/herald-ws/herald/engine/enginetest"
	"github.com/herald-ws/herald/pubsub/natstest"
)

// TestServeAndPubOnSecuredNATS: `herald serve` and `herald pub` join a
// nats-server that wants TLS with a client certificate and an nkey user,
// given the same --nats-* flags; a WebSocket client receives what pub sent,
// and /metrics names the server Herald is connected to. Without the flags,
// pub is refused.
func TestServeAndPubOnSecuredNATS(t *testing.T) {
	pki := natstest.NewPKI(t)
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	public, _ := user.PublicKey()
	seed, _ := user.Seed()
	seedFile := filepath.Join(t.TempDir(), "herald.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := natstest.StartConfig(t, pki.ServerConfig()+fmt.Sprintf("authorization { users: [ { nkey: %s } ] }\n", public))
	natsURL := "tls://" + strings.TrimPrefix(srv.URL(), "nats://")
	flags := []string{"--nats", natsURL, "--nats-nkey", seedFile,
		"--nats-tls-ca", pki.CA, "--nats-tls-cert", pki.ClientCert, "--nats-tls-key", pki.ClientKey}

	_, addr, printed := startHeraldProcessNATS(t, flags...)
	if printed != natsURL {
		t.Errorf("startup line names NATS %q, want %q", printed, natsURL)
	}
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?channel=secure.a", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	expectConnected(t, conn)

	var stderr enginetest.Buffer
	if code := run(append([]string{"pub"}, append(flags, "secure.a", `{"n":1}`)...), &stderr, &stderr); code != 0 {
		t.Fatalf("herald pub exit %d: %s", code, &stderr)
	}
	if env := readEnvelope(t, conn); env.Channel != "secure.a" || string(env.Data) != `{"n":1}` {
		t.Errorf("got %+v, want secure.a {\"n\":1}", env)
	}
	families := scrape(t, addr)
	if v := metricValue(t, families, "herald_nats_connected"); v != 1 {
		t.Errorf("herald_nats_connected = %v", v)
	}
	info := families["herald_nats_server_info"]
	if info == nil || len(info.Metric) != 1 {
		t.Fatalf("herald_nats_server_info = %v, want one series", info)
	}
	labels := map[string]string{}
	for _, l := range info.Metric[0].Label {
		labels[l.GetName()] = l.GetValue()
	}
	if !strings.HasPrefix(labels["server"], "natstest-") || !strings.Contains(labels["url"], strings.TrimPrefix(srv.URL(), "nats://")) {
		t.Errorf("herald_nats_server_info labels = %v, want the natstest server and its URL", labels)
	}

	stderr = enginetest.Buffer{}
	if code := run([]string{"pub", "--nats", natsURL, "--nats-tls-ca", pki.CA, "--timeout", "2s", "secure.a", "x"}, &stderr, &stderr); code == 0 {
		t.Error("herald pub without the client certificate and nkey succeeded")
	}
	if strings.Contains(stderr.String(), string(seed)) {
		t.Errorf("pub's error quotes the seed: %s", &stderr)
	}
}
