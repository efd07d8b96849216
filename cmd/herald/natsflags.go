package main

import (
	"flag"

	"github.com/herald-ws/herald/pubsub"
)

// natsSecurityFlags defines the flags that authenticate to an external NATS
// and secure the link, the same for every command that talks to NATS, and
// returns what they say once parsed. A user and password or a token go in
// the --nats URL itself.
func natsSecurityFlags(fs *flag.FlagSet) func() pubsub.Security {
	creds := fs.String("nats-creds", "", "NATS credentials `file` (user JWT and NKey seed, as nsc writes them), for servers in decentralized-auth (operator) mode")
	nkey := fs.String("nats-nkey", "", "`file` holding a NATS user NKey seed (SU...), for servers with nkey users")
	ca := fs.String("nats-tls-ca", "", "PEM `file` of the CAs that sign the NATS servers' certificates (implies TLS; default: the system's roots for tls:// URLs)")
	cert := fs.String("nats-tls-cert", "", "PEM client certificate `file` for NATS servers that verify clients (with --nats-tls-key; implies TLS)")
	key := fs.String("nats-tls-key", "", "PEM `file` of the key of --nats-tls-cert")
	return func() pubsub.Security {
		return pubsub.Security{CredsFile: *creds, NKeyFile: *nkey, TLSCA: *ca, TLSCert: *cert, TLSKey: *key}
	}
}
