package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/pubsub"
)

// stdin is where `herald pub SUBJECT -` reads its payload; tests replace it.
var stdin io.Reader = os.Stdin

func runPub(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pub", "[flags] SUBJECT PAYLOAD", `Publishes one message on NATS and exits once the server has it. Every
WebSocket client of every Herald on that NATS subscribed to SUBJECT receives
it, as {"channel":"SUBJECT","data":PAYLOAD}. SUBJECT is a concrete NATS
subject (no wildcards). PAYLOAD is sent byte for byte; "-" reads it from
standard input (including any trailing newline). Prints nothing on success.

The default --nats is the embedded NATS server of a 'herald serve' on this
machine; give --nats to publish to an external NATS server or cluster.

Examples:
  herald pub prices.AAPL '{"px":187.2}'
  herald pub --nats nats://nats.internal:4222 game.42 '{"move":"e4"}'
  herald pub --nats tls://nats.internal:4222 --nats-creds app.creds --nats-tls-ca ca.pem chat.1 hi
  printf '%s' "$(date +%s)" | herald pub clock.tick -`, stderr)
	natsURL := fs.String("nats", "nats://"+pubsub.DefaultListen, "`URL` of the NATS server or cluster (comma-separated) to publish to")
	security := natsSecurityFlags(fs)
	timeout := fs.Duration("timeout", 5*time.Second, "give up if the server has not accepted the message within this `duration`")
	// Flags come before SUBJECT: parseArgs returns what follows them.
	positional, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(positional) != 2 {
		fmt.Fprintf(stderr, "want SUBJECT and PAYLOAD, got %d argument(s)\n", len(positional))
		fs.Usage()
		return errUsage
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "--timeout must be positive, got %v\n", *timeout)
		return errUsage
	}
	subject, payload := positional[0], []byte(positional[1])
	if err := channel.Validate(subject, false); err != nil {
		fmt.Fprintf(stderr, "SUBJECT %q: %v\n", subject, err)
		return errUsage
	}
	if positional[1] == "-" {
		if payload, err = io.ReadAll(stdin); err != nil {
			return fmt.Errorf("read PAYLOAD from standard input: %w", err)
		}
	}
	return pubsub.PublishOnce(*natsURL, security(), subject, payload, *timeout)
}
