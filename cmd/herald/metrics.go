package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"

	"github.com/herald-ws/herald/codec"
	"github.com/herald-ws/herald/engine"
	"github.com/herald-ws/herald/engine/push"
)

// metrics exposes Herald's counters in the Prometheus text format. It reads
// the engine's per-loop counters and the broker's counters when scraped,
// so counting costs the delivery path nothing beyond the loops' own
// uncontended atomic adds.
type metrics struct {
	h        *herald
	registry *prometheus.Registry

	open, upgraded, accepted, channels                      *prometheus.Desc
	deliveries, bytesOut, slowConsumers                     *prometheus.Desc
	pings, reaped, handshakeTimeouts, refused               *prometheus.Desc
	natsIn, natsDropped, natsReconnects, natsUp, natsServer *prometheus.Desc
	latency                                                 *prometheus.Desc
	authFailures, published, publishRefused                 *prometheus.Desc
	expired                                                 *prometheus.Desc
	sseOpen, sseAccepted                                    *prometheus.Desc
	historyReads, historyInfos, historyTail, historyReplays *prometheus.Desc
	historyGaps, historyRepaired                            *prometheus.Desc
	compressed, compressedIn, compressedOut, inflated       *prometheus.Desc
}

func newMetrics(h *herald) *metrics {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("herald_"+name, help, labels, nil)
	}
	m := &metrics{
		h:                 h,
		registry:          prometheus.NewRegistry(),
		open:              desc("tcp_connections", "TCP connections open now, in any state."),
		upgraded:          desc("connections", "WebSocket connections open now, event streams (/sse) included."),
		accepted:          desc("tcp_connections_total", "TCP connections accepted."),
		channels:          desc("channels", "Distinct channels with a NATS subscription."),
		deliveries:        desc("deliveries_total", "Messages written to subscribed sockets."),
		bytesOut:          desc("delivered_bytes_total", "Bytes of messages written to subscribed sockets, frame headers included."),
		slowConsumers:     desc("slow_consumer_closes_total", "Subscribers closed with 1008 for falling behind --max-outbound."),
		pings:             desc("pings_total", "Pings sent to silent connections."),
		reaped:            desc("reaped_connections_total", "Connections closed for not answering a ping within --pong-timeout."),
		handshakeTimeouts: desc("handshake_timeouts_total", "Connections closed for not completing their HTTP request within --handshake-timeout."),
		refused:           desc("upgrades_refused_total", "WebSocket upgrades refused, by reason.", "reason"),
		natsIn:            desc("nats_messages_total", "Messages received from NATS."),
		natsDropped:       desc("nats_dropped_total", "Messages NATS dropped because Herald fell behind its pending limits."),
		natsReconnects:    desc("nats_reconnects_total", "Reconnections to NATS after a lost connection."),
		natsUp:            desc("nats_connected", "1 while the NATS connection is up."),
		natsServer:        desc("nats_server_info", "1 for the NATS server Herald is connected to (or was last, while nats_connected is 0): its URL, password or token redacted, server_name and cluster.", "url", "server", "cluster"),
		latency:           desc("delivery_latency_seconds", "Time from a message's receipt from NATS to its last write to a socket."),
		authFailures:      desc("auth_failures_total", "Upgrades and refreshes refused for their token, by reason.", "reason"),
		published:         desc("client_publishes_total", "Client publishes handed to NATS."),
		publishRefused:    desc("client_publishes_refused_total", "Client publishes refused, by in-band error code.", "code"),
		expired:           desc("token_expired_closes_total", "Connections closed with 4001 because their token expired."),
		sseOpen:           desc("sse_connections", "Event streams (GET /sse) open now; herald_connections counts them too."),
		sseAccepted:       desc("sse_connections_total", "Event streams (GET /sse) opened."),
		historyReads:      desc("history_reads_total", "Reads of a history stream's messages (a consumer and its fetches), for resumes, snapshots and gap repairs."),
		historyInfos:      desc("history_info_calls_total", "Calls for a history stream's state before resumes; resumes that arrive during one share the next."),
		historyTail:       desc("history_tail_hits_total", "Resumes answered from a channel's in-memory tail, without reading the stream."),
		historyReplays:    desc("history_replays_total", "Resumes and snapshots answered."),
		historyGaps:       desc("history_gaps_total", "Gaps found in what NATS delivered on history channels (Nats-Last-Sequence)."),
		historyRepaired:   desc("history_repaired_total", "Messages read from the stream to fill those gaps."),
		compressed:        desc("compressed_messages_total", "Messages compressed for permessage-deflate sockets: once per message and format, however many sockets got them."),
		compressedIn:      desc("compression_bytes_in_total", "Payload bytes of the compressed messages before compression."),
		compressedOut:     desc("compression_bytes_out_total", "Payload bytes of the compressed messages after compression (what each deflate socket was sent instead)."),
		inflated:          desc("inflated_messages_total", "Compressed messages received from clients and inflated."),
	}
	m.registry.MustRegister(m,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		m.open, m.upgraded, m.accepted, m.channels, m.deliveries, m.bytesOut, m.slowConsumers,
		m.pings, m.reaped, m.handshakeTimeouts, m.refused, m.natsIn, m.natsDropped, m.natsReconnects,
		m.natsUp, m.natsServer, m.latency, m.authFailures, m.published, m.publishRefused, m.expired,
		m.sseOpen, m.sseAccepted,
		m.historyReads, m.historyInfos, m.historyTail, m.historyReplays, m.historyGaps, m.historyRepaired,
		m.compressed, m.compressedIn, m.compressedOut, m.inflated,
	} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	st := m.h.srv.Stats()
	ps := m.h.hub.Stats()
	ns := m.h.broker.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(m.open, float64(st.Open))
	gauge(m.upgraded, float64(st.Upgraded))
	counter(m.accepted, st.Accepted)
	gauge(m.sseOpen, float64(st.Streams))
	counter(m.sseAccepted, st.StreamsAccepted)
	gauge(m.channels, float64(ps.Channels))
	counter(m.deliveries, ps.Deliveries)
	counter(m.bytesOut, ps.BytesOut)
	counter(m.slowConsumers, st.SlowConsumers)
	counter(m.pings, st.Pings)
	counter(m.reaped, st.Reaped)
	counter(m.handshakeTimeouts, st.HandshakeTimeouts)
	for i, reason := range engine.RefusalReasons {
		counter(m.refused, st.Refused[i], reason)
	}
	counter(m.natsIn, ns.MessagesIn)
	counter(m.natsDropped, ns.Dropped)
	counter(m.natsReconnects, ns.Reconnects)
	up := 0.0
	if m.h.broker.Connected() {
		up = 1
	}
	gauge(m.natsUp, up)
	if srv := m.h.broker.Server(); srv.URL != "" {
		gauge(m.natsServer, 1, srv.URL, srv.Name, srv.Cluster)
	}
	for reason, n := range ps.AuthFailures {
		counter(m.authFailures, n, reason)
	}
	counter(m.published, ps.Published)
	for code, n := range ps.PublishRefused {
		counter(m.publishRefused, n, code)
	}
	counter(m.expired, ps.Expired)
	if m.h.history != nil {
		hs := m.h.history.Stats()
		counter(m.historyReads, hs.Reads)
		counter(m.historyInfos, hs.Infos)
		counter(m.historyTail, hs.TailHits)
		counter(m.historyReplays, hs.Replays)
		counter(m.historyGaps, hs.Gaps)
		counter(m.historyRepaired, hs.Repaired)
	}
	counter(m.compressed, ps.Compressed)
	counter(m.compressedIn, ps.CompressedIn)
	counter(m.compressedOut, ps.CompressedOut)
	counter(m.inflated, st.Inflated)

	buckets := make(map[float64]uint64, len(push.LatencyBuckets))
	var cumulative uint64
	for i, bound := range push.LatencyBuckets {
		cumulative += ps.Latency.Counts[i]
		buckets[bound.Seconds()] = cumulative
	}
	count := cumulative + ps.Latency.Counts[len(push.LatencyBuckets)]
	ch <- prometheus.MustNewConstHistogram(m.latency, count, ps.Latency.Sum.Seconds(), buckets)
}

// serve answers /metrics. It runs on an event loop; a scrape costs well
// under a millisecond.
func (m *metrics) serve(dst []byte, _ *codec.Request) ([]byte, int, string) {
	families, err := m.registry.Gather()
	if err != nil {
		return append(dst, "gathering metrics: "+err.Error()+"\n"...), 500, "text/plain; charset=utf-8"
	}
	w := appendWriter{dst}
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	enc := expfmt.NewEncoder(&w, format)
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return append(dst[:0], "encoding metrics: "+err.Error()+"\n"...), 500, "text/plain; charset=utf-8"
		}
	}
	return w.b, 200, string(format)
}

// appendWriter is an io.Writer that appends to a byte slice.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}
