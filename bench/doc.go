// Package bench is Herald's load client: it opens many WebSocket
// connections to a Herald server, drives one of its scenarios against
// them and reports what the server did.
//
//   - idle holds N upgraded connections and measures the server's resident
//     memory per connection (and the kernel's per socket, when the server
//     runs on this host), the connect rate and the handshake failures.
//   - fanout spreads N connections over K channels, publishes M messages
//     through NATS and measures deliveries per second, delivered,
//     missing, duplicated and out-of-order messages, publish-to-receive
//     latency and the server's CPU time per delivery.
//     With PerConn every connection has a channel of its own and the
//     round robin sends each message to a different socket (Rounds
//     messages to each); with Rates it is an overload sweep, one steady
//     step per rate on the same connections, reported step by step.
//   - storm drops every connection at once, reconnects them all and
//     measures how long until all are back and what was refused meanwhile.
//   - floor is the loopback write floor, with no server: the bench listens
//     itself, its shards (always child processes) connect as readers, and
//     it writes one pre-built frame per message to every socket with a
//     bare loop of write(2) calls, measuring its own CPU time per write
//     and the time one pass over all sockets takes.
//
// The client shares the machine with the server it measures, so it is
// built to be cheap: connections live on a gnet client's event loops with
// no goroutine per connection, frames are parsed in place with
// codec.ParseHeader, and the sequence number and send time are scanned out
// of the payload without encoding/json. Each event loop keeps its own
// latency histogram and counters, merged only when the run ends.
//
// One process may hold about 20,000 open files, so past one shard of
// connections the client re-executes itself (Config.ShardCommand) and
// spreads the connections over child processes, each dialing from its own
// loopback source address so that no shard runs out of ephemeral ports.
// Children speak JSON lines with the parent over their standard input and
// output; the parent sums their counts and merges their histograms.
//
// The package does not publish by itself: the caller hands it a Publish
// function (NATS, in the herald binary), which keeps bench free of the
// server's packages.
package bench
