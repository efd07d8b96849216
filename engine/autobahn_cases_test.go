package engine_test

// The Autobahn|Testsuite cases 1 to 7, 9 and 10 (12 and 13 are in
// autobahn_compression_cases_test.go), ported from
// crossbario/autobahn-testsuite autobahntestsuite/autobahntestsuite/case/.
// Each entry sends what the Python case's onOpen sends (payloads, sizes,
// fragmentation, chop sizes, sync writes, delays) and expects what it
// expects; ids and abridged DESCRIPTIONs are Autobahn's.

import (
	"bytes"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

const abHello = "Hello, world!"

func abCases() []abCase {
	var cs []abCase
	cs = append(cs, abFramingCases()...)
	cs = append(cs, abPingCases()...)
	cs = append(cs, abReservedBitsCases()...)
	cs = append(cs, abOpcodeCases()...)
	cs = append(cs, abFragmentationCases()...)
	cs = append(cs, abUTF8Cases()...)
	cs = append(cs, abCloseCases()...)
	cs = append(cs, abLimitsCases()...)
	cs = append(cs, abAutoFragmentationCases()...)
	cs = append(cs, abCompressionCases()...)
	return cs
}

// 1.1.x / 1.2.x: a text ("*") or binary (0xfe) message of a given length,
// echoed and closed cleanly with 1000.
func abFramingCases() []abCase {
	sizes := []struct {
		n, chop int
		kill    time.Duration
	}{
		{0, 0, time.Second}, {125, 0, time.Second}, {126, 0, time.Second}, {127, 0, time.Second},
		{128, 0, time.Second}, {65535, 0, 10 * time.Second}, {65536, 0, 10 * time.Second},
		{65536, 997, 10 * time.Second},
	}
	var cs []abCase
	for sub, kind := range []struct {
		name    string
		opcode  byte
		pattern string
		echo    func(string) abEvent
	}{{"text", abOpText, "*", abTextMsg}, {"binary", abOpBinary, "\xfe", abBinaryMsg}} {
		for i, sz := range sizes {
			payload := strings.Repeat(kind.pattern, sz.n)
			desc := fmt.Sprintf("Send %s message with payload of length %d.", kind.name, sz.n)
			if sz.chop > 0 {
				desc = fmt.Sprintf("Send %s message with payload of length %d. Sent out data in chops of %d octets.", kind.name, sz.n, sz.chop)
			}
			cs = append(cs, abCase{
				id: fmt.Sprintf("1.%d.%d", sub+1, i+1), desc: desc,
				expect: []abOutcome{abWant(abOK, kind.echo(payload))},
				close:  abCleanNormalClose(),
				steps:  []abStep{abSend(abFr(kind.opcode, payload).chopped(sz.chop))},
				timer:  abKillAfter(sz.kill),
			})
		}
	}
	return cs
}

// 2.x: pings must be answered by pongs with the same payload, unsolicited
// pongs ignored, and an oversized ping fail the connection.
func abPingCases() []abCase {
	big := strings.Repeat("\xfe", 125)
	const unsolicited = "unsolicited pong payload"
	tenPings := func(chop int) []abStep {
		var fs []abFrame
		for i := range 10 {
			fs = append(fs, abFr(abOpPing, fmt.Sprintf("payload-%d", i)).chopped(chop))
		}
		return []abStep{abSend(fs...)}
	}
	tenPongs := func() []abEvent {
		var es []abEvent
		for i := range 10 {
			es = append(es, abPongMsg(fmt.Sprintf("payload-%d", i)))
		}
		return es
	}
	pong := func(id, desc string, ping abFrame, after time.Duration) abCase {
		return abCase{id: id, desc: desc,
			expect: []abOutcome{abWant(abOK, abPongMsg(string(ping.payload)))},
			close:  abCleanNormalClose(), steps: []abStep{abSend(ping)}, timer: abCloseAfter(after)}
	}
	return []abCase{
		pong("2.1", "Send ping without payload.", abFr(abOpPing, ""), time.Second),
		pong("2.2", "Send ping with small text payload.", abFr(abOpPing, abHello), time.Second),
		pong("2.3", "Send ping with small binary (non UTF-8) payload.", abFr(abOpPing, "\x00\xff\xfe\xfd\xfc\xfb\x00\xff"), time.Second),
		pong("2.4", "Send ping with binary payload of 125 octets.", abFr(abOpPing, big), time.Second),
		{id: "2.5", desc: "Send ping with binary payload of 126 octets.",
			expect: []abOutcome{abWant(abOK)}, close: abServerFails(abCloseProtocolError),
			steps: []abStep{abSend(abFr(abOpPing, big+"\xfe"))}, timer: abKillAfter(time.Second)},
		pong("2.6", "Send ping with binary payload of 125 octets, send in octet-wise chops.", abFr(abOpPing, big).chopped(1), 2*time.Second),
		{id: "2.7", desc: "Send unsolicited pong without payload. Verify nothing is received. Clean close with normal code.",
			expect: []abOutcome{abWant(abOK)}, close: abCleanNormalClose(),
			steps: []abStep{abSend(abFr(abOpPong, "")), abSendClose(abCloseNormal, "")}, timer: abCloseAfter(time.Second)},
		{id: "2.8", desc: "Send unsolicited pong with payload. Verify nothing is received. Clean close with normal code.",
			expect: []abOutcome{abWant(abOK)}, close: abCleanNormalClose(),
			steps: []abStep{abSend(abFr(abOpPong, unsolicited)), abSendClose(abCloseNormal, "")}, timer: abCloseAfter(time.Second)},
		{id: "2.9", desc: "Send unsolicited pong with payload. Send ping with payload. Verify pong for ping is received.",
			expect: []abOutcome{abWant(abOK, abPongMsg("ping payload"))}, close: abCleanNormalClose(),
			steps: []abStep{abSend(abFr(abOpPong, unsolicited), abFr(abOpPing, "ping payload"))}, timer: abCloseAfter(time.Second)},
		{id: "2.10", desc: "Send 10 Pings with payload.",
			expect: []abOutcome{abWant(abOK, tenPongs()...)}, close: abCleanNormalClose(),
			steps: tenPings(0), timer: abCloseAfter(3 * time.Second)},
		{id: "2.11", desc: "Send 10 Pings with payload. Send out octets in octet-wise chops.",
			expect: []abOutcome{abWant(abOK, tenPongs()...)}, close: abCleanNormalClose(),
			steps: tenPings(1), timer: abCloseAfter(3 * time.Second)},
	}
}

// 3.x: a frame with RSV bits set must fail the connection (1002). Where a
// valid message precedes it, its echo is OK and no echo NON-STRICT.
func abReservedBitsCases() []abCase {
	fail := func(id, desc string, expect []abOutcome, frames ...abFrame) abCase {
		return abCase{id: id, desc: desc, expect: expect, close: abServerFails(abCloseProtocolError),
			steps: []abStep{abSend(frames...)}, timer: abKillAfter(time.Second)}
	}
	nothing := []abOutcome{abWant(abOK)}
	echoThenFail := []abOutcome{abWant(abOK, abTextMsg(abHello)), abWant(abNonStrict)}
	return []abCase{
		fail("3.1", "Send small text message with RSV = 1.", nothing, abFr(abOpText, abHello).withRSV(1)),
		fail("3.2", "Send small text message, then send again with RSV = 2, then send Ping.", echoThenFail,
			abFr(abOpText, abHello), abFr(abOpText, abHello).withRSV(2), abFr(abOpPing, "")),
		fail("3.3", "Send small text message, then send again with RSV = 3, then send Ping. Octets are sent in frame-wise chops.", echoThenFail,
			abFr(abOpText, abHello).synced(), abFr(abOpText, abHello).withRSV(3).synced(), abFr(abOpPing, "").synced()),
		fail("3.4", "Send small text message, then send again with RSV = 4, then send Ping. Octets are sent in octet-wise chops.", echoThenFail,
			abFr(abOpText, abHello).chopped(1), abFr(abOpText, abHello).withRSV(4).chopped(1), abFr(abOpPing, "").chopped(1)),
		fail("3.5", "Send small binary message with RSV = 5.", nothing, abFr(abOpBinary, "\x00\xff\xfe\xfd\xfc\xfb\x00\xff").withRSV(5)),
		// Autobahn's 3.6 says "Ping" but sends a binary frame; ported as sent.
		fail("3.6", "Send Ping with RSV = 6.", nothing, abFr(abOpBinary, abHello).withRSV(6)),
		fail("3.7", "Send Close with RSV = 7.", nothing, abFr(abOpClose, "").withRSV(7)),
	}
}

// 4.x: reserved opcodes (3-7 data, 11-15 control) must fail the connection.
func abOpcodeCases() []abCase {
	var cs []abCase
	for _, g := range []struct {
		sub  int
		base byte
		kind string
	}{{1, 3, "non-control"}, {2, 11, "control"}} {
		op := func(i int) byte { return g.base + byte(i) }
		id := func(i int) string { return fmt.Sprintf("4.%d.%d", g.sub, i+1) }
		fail := func(i int, desc string, expect []abOutcome, frames ...abFrame) abCase {
			return abCase{id: id(i), desc: desc, expect: expect, close: abServerFails(abCloseProtocolError),
				steps: []abStep{abSend(frames...)}, timer: abKillAfter(time.Second)}
		}
		nothing := []abOutcome{abWant(abOK)}
		echoThenFail := []abOutcome{abWant(abOK, abTextMsg(abHello)), abWant(abNonStrict)}
		cs = append(cs,
			fail(0, fmt.Sprintf("Send frame with reserved %s Opcode = %d.", g.kind, op(0)), nothing,
				abFr(op(0), "")),
			fail(1, fmt.Sprintf("Send frame with reserved %s Opcode = %d and non-empty payload.", g.kind, op(1)), nothing,
				abFr(op(1), "reserved opcode payload")),
			fail(2, fmt.Sprintf("Send small text message, then send frame with reserved %s Opcode = %d, then send Ping.", g.kind, op(2)), echoThenFail,
				abFr(abOpText, abHello), abFr(op(2), ""), abFr(abOpPing, "")),
			fail(3, fmt.Sprintf("Send small text message, then send frame with reserved %s Opcode = %d and non-empty payload, then send Ping.", g.kind, op(3)), echoThenFail,
				abFr(abOpText, abHello), abFr(op(3), abHello), abFr(abOpPing, "")),
			fail(4, fmt.Sprintf("Send small text message, then send frame with reserved %s Opcode = %d and non-empty payload, then send Ping (octet-wise chops).", g.kind, op(4)), echoThenFail,
				abFr(abOpText, abHello).chopped(1), abFr(op(4), abHello).chopped(1), abFr(abOpPing, "").chopped(1)),
		)
	}
	return cs
}

// 5.x: fragmentation. Control frames must not be fragmented, continuations
// need a message to continue, pings may come between fragments.
func abFragmentationCases() []abCase {
	const f1, f2 = "fragment1", "fragment2"
	fail := func(id, desc string, expect []abOutcome, frames ...abFrame) abCase {
		return abCase{id: id, desc: desc, expect: expect, close: abServerFails(abCloseProtocolError),
			steps: []abStep{abSend(frames...)}, timer: abKillAfter(time.Second)}
	}
	echo := func(id, desc string, expect []abEvent, frames ...abFrame) abCase {
		return abCase{id: id, desc: desc, expect: []abOutcome{abWant(abOK, expect...)}, close: abCleanNormalClose(),
			steps: []abStep{abSend(frames...)}, timer: abCloseAfter(time.Second)}
	}
	nothing := []abOutcome{abWant(abOK)}
	pingBetween := []abEvent{abPongMsg("ping payload"), abTextMsg(f1 + f2)}
	// wire applies one of the three ways Autobahn writes a case's frames:
	// all in one chop, frame-wise (sync) or octet-wise (chopsize 1).
	wire := func(how int, fs ...abFrame) []abFrame {
		out := make([]abFrame, len(fs))
		for i, f := range fs {
			switch how {
			case 1:
				f = f.synced()
			case 2:
				f = f.chopped(1)
			}
			out[i] = f
		}
		return out
	}
	ways := []string{"", " Octets are sent in frame-wise chops.", " Octets are sent in octet-wise chops."}
	chops := []string{"one chop", "per-frame chops", "octet-wise chops"}
	cs := []abCase{
		fail("5.1", "Send Ping fragmented into 2 fragments.", nothing,
			abFr(abOpPing, f1).more(), abFr(abOpCont, f2)),
		fail("5.2", "Send Pong fragmented into 2 fragments.", nothing,
			abFr(abOpPong, f1).more(), abFr(abOpCont, f2)),
	}
	for how := range 3 {
		cs = append(cs, echo(fmt.Sprintf("5.%d", 3+how), "Send text Message fragmented into 2 fragments."+ways[how],
			[]abEvent{abTextMsg(f1 + f2)}, wire(how, abFr(abOpText, f1).more(), abFr(abOpCont, f2))...))
	}
	for how := range 3 {
		cs = append(cs, echo(fmt.Sprintf("5.%d", 6+how), "Send text Message fragmented into 2 fragments, one ping with payload in-between."+ways[how],
			pingBetween, wire(how, abFr(abOpText, f1).more(), abFr(abOpPing, "ping payload"), abFr(abOpCont, f2))...))
	}
	for how := range 3 {
		cs = append(cs, fail(fmt.Sprintf("5.%d", 9+how),
			"Send unfragmented Text Message after Continuation Frame with FIN = true, where there is nothing to continue, sent in "+chops[how]+".",
			nothing, wire(how, abFr(abOpCont, "non-continuation payload"), abFr(abOpText, abHello))...))
	}
	for how := range 3 {
		cs = append(cs, fail(fmt.Sprintf("5.%d", 12+how),
			"Send unfragmented Text Message after Continuation Frame with FIN = false, where there is nothing to continue, sent in "+chops[how]+".",
			nothing, wire(how, abFr(abOpCont, "non-continuation payload").more(), abFr(abOpText, abHello))...))
	}
	twice := func(fs ...abFrame) []abFrame { return append(fs, fs...) }
	cs = append(cs,
		fail("5.15", "Send text Message fragmented into 2 fragments, then Continuation Frame with FIN = false where there is nothing to continue, then unfragmented Text Message, all sent in one chop.",
			[]abOutcome{abWant(abOK, abTextMsg(f1+f2)), abWant(abNonStrict)},
			abFr(abOpText, f1).more(), abFr(abOpCont, f2), abFr(abOpCont, "fragment3").more(), abFr(abOpText, "fragment4")),
		fail("5.16", "Repeated 2x: Continuation Frame with FIN = false (where there is nothing to continue), then text Message fragmented into 2 fragments.",
			nothing, twice(abFr(abOpCont, f1).more(), abFr(abOpText, f2).more(), abFr(abOpCont, "fragment3"))...),
		fail("5.17", "Repeated 2x: Continuation Frame with FIN = true (where there is nothing to continue), then text Message fragmented into 2 fragments.",
			nothing, twice(abFr(abOpCont, f1), abFr(abOpText, f2).more(), abFr(abOpCont, "fragment3"))...),
		fail("5.18", "Send text Message fragmented into 2 fragments, with both frame opcodes set to text, sent in one chop.",
			nothing, abFr(abOpText, f1).more(), abFr(abOpText, f2)),
		abPingsInFragmentedMessage("5.19", false),
		abPingsInFragmentedMessage("5.20", true),
	)
	return cs
}

// abPingsInFragmentedMessage is 5.19 (and 5.20, with every frame synced): two
// fragments and a ping, then after 1 s two more fragments, a ping and the
// last fragment. Both pongs must come back, then the whole message.
func abPingsInFragmentedMessage(id string, sync bool) abCase {
	frags := []string{"fragment1", "fragment2", "fragment3", "fragment4", "fragment5"}
	pings := []string{"pongme 1!", "pongme 2!"}
	desc := "A fragmented text message is sent in multiple frames. After sending the first 2 frames of the text message, a Ping is sent. Then we wait 1s, then we send 2 more text fragments, another Ping and then the final text fragment."
	if sync {
		desc = "Same as Case 5.19, but send all frames with SYNC = True."
	}
	return abCase{id: id, desc: desc, open: func(s *abSession) {
		s.expected = []abOutcome{abWant(abOK, abPongMsg(pings[0]), abPongMsg(pings[1]), abTextMsg(strings.Join(frags, "")))}
		s.expectedClose = abCleanNormalClose()
		abSend(abFr(abOpText, frags[0]).more().withSync(sync), abFr(abOpCont, frags[1]).more().withSync(sync),
			abFr(abOpPing, pings[0]).withSync(sync))(s)
		s.continueLater(time.Second, func() {
			abSend(abFr(abOpCont, frags[2]).more().withSync(sync), abFr(abOpCont, frags[3]).more().withSync(sync),
				abFr(abOpPing, pings[1]).withSync(sync), abFr(abOpCont, frags[4]).withSync(sync))(s)
			s.closeAfter(time.Second)
		})
	}}
}

// κόσμε followed by an invalid sequence and "edited": the payloads of 6.3.x.
const (
	abKosme           = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
	abInvalidSurrogat = abKosme + "\xed\xa0\x80" + "edited" // invalid at octet 12 (\xa0)
	abInvalidTooBig   = abKosme + "\xf4\x90\x80\x80" + "edited"
	abHelloUTF8       = "Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!" // Hello-µ@ßöäüàá-UTF-8!!
)

// 6.x: UTF-8 handling. Valid text is echoed; invalid text must fail the
// connection with 1007 (and the server, not the fuzzer, must be the one).
func abUTF8Cases() []abCase {
	echo := func(id, desc, want string, steps ...abStep) abCase {
		return abCase{id: id, desc: desc, expect: []abOutcome{abWant(abOK, abTextMsg(want))},
			close: abCleanNormalClose(), steps: steps, timer: abCloseAfter(time.Second)}
	}
	cs := []abCase{
		echo("6.1.1", "Send text message of length 0.", "", abSend(abFr(abOpText, ""))),
		echo("6.1.2", "Send fragmented text message, 3 fragments each of length 0.", "",
			abSend(abFr(abOpText, "").more(), abFr(abOpCont, "").more(), abFr(abOpCont, ""))),
		echo("6.1.3", "Send fragmented text message, 3 fragments, first and last of length 0, middle non-empty.", "middle frame payload",
			abSend(abFr(abOpText, "").more(), abFr(abOpCont, "middle frame payload").more(), abFr(abOpCont, ""))),
		echo("6.2.1", "Send a valid UTF-8 text message in one fragment.", abHelloUTF8,
			abSendMessage(abHelloUTF8, false, 0)),
		echo("6.2.2", "Send a valid UTF-8 text message in two fragments, fragmented on UTF-8 code point boundary.", abHelloUTF8,
			abSend(abFr(abOpText, abHelloUTF8[:len("Hello-µ@ßöä")]).more(), abFr(abOpCont, abHelloUTF8[len("Hello-µ@ßöä"):]))),
		echo("6.2.3", "Send a valid UTF-8 text message in fragments of 1 octet, resulting in frames ending on positions which are not code point ends.", abHelloUTF8,
			abSendMessage(abHelloUTF8, false, 1)),
		echo("6.2.4", "Send a valid UTF-8 text message in fragments of 1 octet, resulting in frames ending on positions which are not code point ends.", abKosme,
			abSendMessage(abKosme, false, 1)),
		{id: "6.3.1", desc: "Send invalid UTF-8 text message unfragmented.",
			expect: []abOutcome{abWant(abOK)}, close: abServerFailsUTF8(),
			steps: []abStep{abSendMessage(abInvalidSurrogat, false, 0)}, timer: abKillAfter(time.Second)},
		{id: "6.3.2", desc: "Send invalid UTF-8 text message in fragments of 1 octet, resulting in frames ending on positions which are not code point ends.",
			expect: []abOutcome{abWant(abOK)}, close: abServerFailsUTF8(),
			steps: []abStep{abSendMessage(abInvalidSurrogat, false, 1)}, timer: abKillAfter(time.Second)},
		abFailFastCase("6.4.1", "Send invalid UTF-8 text message in 3 fragments (frames). First frame payload is valid, then wait, then 2nd frame which contains the payload making the sequence invalid, then wait, then 3rd frame with rest.",
			[3]string{abKosme, "\xf4\x90\x80\x80", "edited"}, false),
		abFailFastCase("6.4.2", "Same as Case 6.4.1, but in 2nd frame, we send only up to and including the octet making the complete payload invalid.",
			[3]string{abInvalidTooBig[:12], abInvalidTooBig[12:13], abInvalidTooBig[13:]}, false),
		abFailFastCase("6.4.3", "Same as Case 6.4.1, but we send message not in 3 frames, but in 3 chops of the same message frame.",
			[3]string{abKosme, "\xf4\x90\x80\x80", "edited"}, true),
		abFailFastCase("6.4.4", "Same as Case 6.4.2, but we send message not in 3 frames, but in 3 chops of the same message frame.",
			[3]string{abInvalidTooBig[:12], abInvalidTooBig[12:13], abInvalidTooBig[13:]}, true),
	}
	// 6.5 to 6.23: one text message per vector of createUtf8TestSequences.
	for gi, g := range abUTF8Groups() {
		for vi, v := range g.vectors {
			c := abCase{id: fmt.Sprintf("6.%d.%d", gi+5, vi+1),
				steps: []abStep{abSendMessage(string(v.payload), false, 0)}, timer: abKillAfter(500 * time.Millisecond)}
			if v.valid {
				c.desc = fmt.Sprintf("%s: send a text message with payload which is valid UTF-8 in one fragment. Payload: 0x%x", g.title, v.payload)
				c.expect, c.close = []abOutcome{abWant(abOK, abTextMsg(string(v.payload)))}, abCleanNormalClose()
			} else {
				c.desc = fmt.Sprintf("%s: send a text message with payload which is not valid UTF-8 in one fragment. Payload: 0x%x", g.title, v.payload)
				c.expect, c.close = []abOutcome{abWant(abOK)}, abServerFailsUTF8()
			}
			cs = append(cs, c)
		}
	}
	return cs
}

// abFailFastCase is 6.4.x: the invalid UTF-8 message goes out in three parts
// (frames, or chops of one frame) a second apart. A server that fails the
// connection on the second part is OK; one that waits for the third is
// NON-STRICT; one that never fails is FAILED.
func abFailFastCase(id, desc string, parts [3]string, oneFrame bool) abCase {
	return abCase{id: id, desc: desc, open: func(s *abSession) {
		s.expected = []abOutcome{
			abWant(abOK, abTimeoutMark("A")),
			abWant(abNonStrict, abTimeoutMark("A"), abTimeoutMark("B")),
		}
		s.expectedClose = abServerFailsUTF8()
		send := func(i int) {
			switch {
			case oneFrame:
				s.sendMessageFrameData(parts[i])
				if i == 2 {
					s.endMessage()
				}
			case i == 0:
				s.sendFrame(abFr(abOpText, parts[0]).more())
			case i == 1:
				s.sendFrame(abFr(abOpCont, parts[1]).more())
			default:
				s.sendFrame(abFr(abOpCont, parts[2]))
			}
		}
		if oneFrame {
			s.beginMessageFrame(abOpText, len(parts[0]+parts[1]+parts[2]))
		}
		send(0)
		s.continueLater(time.Second, func() {
			if s.state != abStateOpen {
				return
			}
			s.received = append(s.received, abTimeoutMark("A"))
			send(1)
			s.continueLater(time.Second, func() {
				if s.state != abStateOpen {
					return
				}
				s.received = append(s.received, abTimeoutMark("B"))
				send(2)
				s.killAfter(time.Second)
			})
		})
	}}
}

type abUTF8Vector struct {
	valid   bool
	payload []byte
}

type abUTF8Group struct {
	title   string
	vectors []abUTF8Vector
}

// abUTF8Groups is case6_x_x.py's createUtf8TestSequences (from Markus Kuhn's
// UTF-8-test.txt); group i is case 6.(i+5).
func abUTF8Groups() []abUTF8Group {
	v := func(valid bool, payloads ...string) []abUTF8Vector {
		var vs []abUTF8Vector
		for _, p := range payloads {
			vs = append(vs, abUTF8Vector{valid, []byte(p)})
		}
		return vs
	}
	var prefixes []abUTF8Vector
	for i := 1; i <= len(abKosme); i++ {
		prefixes = append(prefixes, abUTF8Vector{utf8.ValidString(abKosme[:i]), []byte(abKosme[:i])})
	}
	var continuations []byte
	for b := 0x80; b < 0xbf; b++ {
		continuations = append(continuations, byte(b))
	}
	var lonely []abUTF8Vector
	for _, r := range [][2]int{{0xc0, 0xdf}, {0xe0, 0xef}, {0xf0, 0xf7}, {0xf8, 0xfb}, {0xfc, 0xfd}} {
		var s []byte
		for b := r[0]; b < r[1]; b++ {
			s = append(s, byte(b), ' ')
		}
		lonely = append(lonely, abUTF8Vector{false, s})
	}
	incomplete := []string{"\xc0", "\xe0\x80", "\xf0\x80\x80", "\xf8\x80\x80\x80", "\xfc\x80\x80\x80\x80",
		"\xdf", "\xef\xbf", "\xf7\xbf\xbf", "\xfb\xbf\xbf\xbf", "\xfd\xbf\xbf\xbf\xbf"}
	nonChars := v(true, "\xef\xbf\xbe", "\xef\xbf\xbf")
	for _, z1 := range []byte{0xf0, 0xf1, 0xf2, 0xf3, 0xf4} {
		for _, z2 := range []byte{0x8f, 0x9f, 0xaf, 0xbf} {
			if z1 == 0xf4 && z2 != 0x8f { // above U+10FFFF
				continue
			}
			for _, z3 := range []byte{0xbe, 0xbf} {
				if z1 == 0xf0 && z2 == 0x8f { // overlong
					continue
				}
				nonChars = append(nonChars, abUTF8Vector{true, []byte{z1, z2, 0xbf, z3}})
			}
		}
	}
	return []abUTF8Group{
		{"Some valid UTF-8 sequences", v(true, "hello\x24world", "hello\xc2\xa2world", "hello\xe2\x82\xacworld", "hello\xf0\xa4\xad\xa2world", abKosme)},
		{"All prefixes of a valid UTF-8 string that contains multi-byte code points", prefixes},
		{"First possible sequence of a certain length", v(true, "\x00", "\xc2\x80", "\xe0\xa0\x80", "\xf0\x90\x80\x80")},
		{"First possible sequence length 5/6 (invalid codepoints)", v(false, "\xf8\x88\x80\x80\x80", "\xfc\x84\x80\x80\x80\x80")},
		{"Last possible sequence of a certain length", v(true, "\x7f", "\xdf\xbf", "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf")},
		{"Last possible sequence length 4/5/6 (invalid codepoints)", v(false, "\xf7\xbf\xbf\xbf", "\xfb\xbf\xbf\xbf\xbf", "\xfd\xbf\xbf\xbf\xbf\xbf")},
		{"Other boundary conditions", append(v(true, "\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbd", "\xf4\x8f\xbf\xbf"), v(false, "\xf4\x90\x80\x80")...)},
		{"Unexpected continuation bytes", v(false, "\x80", "\xbf", "\x80\xbf", "\x80\xbf\x80", "\x80\xbf\x80\xbf", "\x80\xbf\x80\xbf\x80", "\x80\xbf\x80\xbf\x80\xbf", string(continuations))},
		{"Lonely start characters", lonely},
		{"Sequences with last continuation byte missing", v(false, incomplete...)},
		{"Concatenation of incomplete sequences", v(false, strings.Join(incomplete, ""))},
		{"Impossible bytes", v(false, "\xfe", "\xff", "\xfe\xfe\xff\xff")},
		{"Examples of an overlong ASCII character", v(false, "\xc0\xaf", "\xe0\x80\xaf", "\xf0\x80\x80\xaf", "\xf8\x80\x80\x80\xaf", "\xfc\x80\x80\x80\x80\xaf")},
		{"Maximum overlong sequences", v(false, "\xc1\xbf", "\xe0\x9f\xbf", "\xf0\x8f\xbf\xbf", "\xf8\x87\xbf\xbf\xbf", "\xfc\x83\xbf\xbf\xbf\xbf")},
		{"Overlong representation of the NUL character", v(false, "\xc0\x80", "\xe0\x80\x80", "\xf0\x80\x80\x80", "\xf8\x80\x80\x80\x80", "\xfc\x80\x80\x80\x80\x80")},
		{"Single UTF-16 surrogates", v(false, "\xed\xa0\x80", "\xed\xad\xbf", "\xed\xae\x80", "\xed\xaf\xbf", "\xed\xb0\x80", "\xed\xbe\x80", "\xed\xbf\xbf")},
		{"Paired UTF-16 surrogates", v(false, "\xed\xa0\x80\xed\xb0\x80", "\xed\xa0\x80\xed\xbf\xbf", "\xed\xad\xbf\xed\xb0\x80", "\xed\xad\xbf\xed\xbf\xbf",
			"\xed\xae\x80\xed\xb0\x80", "\xed\xae\x80\xed\xbf\xbf", "\xed\xaf\xbf\xed\xb0\x80", "\xed\xaf\xbf\xed\xbf\xbf")},
		{"Non-character code points (valid UTF-8)", nonChars},
		{"Unicode specials (i.e. replacement char)", v(true, "\xef\xbf\xb9", "\xef\xbf\xba", "\xef\xbf\xbb", "\xef\xbf\xbc", "\xef\xbf\xbd", "\xef\xbf\xbe", "\xef\xbf\xbf")},
	}
}

// 7.x: close handling. The fuzzer starts the closing handshake (sometimes
// followed by frames the server must ignore); the server must answer with
// the expected code and then drop TCP. A wrong code fails the case.
func abCloseCases() []abCase {
	closing := func(id, desc string, requireClean bool, codes []int, steps ...abStep) abCase {
		return abCase{id: id, desc: desc, expect: []abOutcome{abWant(abOK)},
			close: abClientCloses(requireClean, codes...), steps: steps, timer: abKillAfter(time.Second),
			suppressClose: true, lost: abWrongCodeFails}
	}
	normal := []int{abCloseNormal}
	protocolError := []int{abCloseProtocolError}
	cs := []abCase{
		{id: "7.1.1", desc: "Send a message followed by a close frame",
			expect: []abOutcome{abWant(abOK, abTextMsg("Hello World!"))}, close: abCleanNormalClose(),
			steps: []abStep{abSend(abFr(abOpText, "Hello World!"))}, timer: abKillAfter(time.Second), lost: abWrongCodeFails},
		closing("7.1.2", "Send two close frames", true, normal,
			abSendClose(abCloseNormal, ""), abSend(abFr(abOpClose, ""))),
		closing("7.1.3", "Send a ping after close message", true, normal,
			abSendClose(abCloseNormal, ""), abSend(abFr(abOpPing, ""))),
		closing("7.1.4", "Send text message after sending a close frame.", true, normal,
			abSendClose(abCloseNormal, ""), abSend(abFr(abOpText, "Hello World!"))),
		closing("7.1.5", "Send message fragment1 followed by close then fragment", true, normal,
			abSend(abFr(abOpText, "fragment1").more()), abSendClose(abCloseNormal, ""), abSend(abFr(abOpCont, "fragment2"))),
		{id: "7.1.6", desc: "Send 256K message followed by close then a ping",
			expect: []abOutcome{abWant(abOK, abTextMsg("Hello World!")), abWant(abNonStrict)}, close: abCleanNormalClose(),
			steps: []abStep{
				abSend(abFrame{opcode: abOpText, payload: abRepeat("BAsd7&jh23", 256<<10), fin: true}, abFr(abOpText, "Hello World!")),
				abSendClose(abCloseNormal, ""), abSend(abFr(abOpPing, "")),
			},
			timer: abKillAfter(time.Second), suppressClose: true, lost: abInformationalOutcome},
		closing("7.3.1", "Send a close frame with payload length 0 (no close code, no close reason)", true, normal,
			abSendClose(abNoCode, "")),
		closing("7.3.2", "Send a close frame with payload length 1", false, protocolError,
			abSendClose(abNoCode, "a")),
		closing("7.3.3", "Send a close frame with payload length 2 (regular close with a code)", true, normal,
			abSendClose(abCloseNormal, "")),
		closing("7.3.4", "Send a close frame with close code and close reason", true, normal,
			abSendClose(abCloseNormal, "Hello World!")),
		closing("7.3.5", "Send a close frame with close code and close reason of maximum length (123)", true, normal,
			abSendClose(abCloseNormal, strings.Repeat("*", 123))),
		closing("7.3.6", "Send a close frame with close code and close reason which is too long (124) - total frame payload 126 octets", false, protocolError,
			abSendClose(abCloseNormal, strings.Repeat("*", 124))),
		closing("7.5.1", "Send a close frame with invalid UTF8 payload", false, []int{abCloseProtocolError, abCloseInvalidPayload},
			abSendClose(abCloseNormal, abInvalidSurrogat)),
	}
	for i, code := range []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999} {
		cs = append(cs, closing(fmt.Sprintf("7.7.%d", i+1), fmt.Sprintf("Send close with valid close code %d", code),
			true, []int{abCloseNormal, code}, abSendClose(code, "")))
	}
	for i, code := range []int{0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 1100, 2000, 2999} {
		cs = append(cs, closing(fmt.Sprintf("7.9.%d", i+1), fmt.Sprintf("Send close with invalid close code %d", code),
			false, protocolError, abSendClose(code, "")))
	}
	for i, code := range []int{5000, 65535} {
		c := closing(fmt.Sprintf("7.13.%d", i+1), fmt.Sprintf("Send close with close code %d", code),
			false, []int{abCloseNormal, code, abCloseProtocolError}, abSendClose(code, ""))
		c.lost = abInformationalOutcome
		cs = append(cs, c)
	}
	return cs
}

// abLimitsDeadline bounds each 9.x case. Autobahn waits 60 to 1000 s there;
// a healthy server needs well under a second even under -race, so 30 s only
// leaves room for a loaded machine while still catching a hang.
const abLimitsDeadline = 30 * time.Second

// 9.x: limits and performance. One big message (9.1-9.6) or 1000 messages
// one after the other (9.7, 9.8), judged in onMessage by type and length.
func abLimitsCases() []abCase {
	const textPattern, binaryPattern = "BAsd7&jh23", "\x00\xfe\x23\xfa\xf0"
	size := func(n int) string {
		if n >= 1<<20 {
			return fmt.Sprintf("%dM", n>>20)
		}
		return fmt.Sprintf("%dk", n>>10)
	}
	var cs []abCase
	// 9.1 / 9.2: one unfragmented message of increasing size.
	for sub, binary := range []bool{false, true} {
		pattern := map[bool]string{false: textPattern, true: binaryPattern}[binary]
		for i, sz := range []struct {
			n    int
			wait time.Duration
		}{{64 << 10, 10}, {256 << 10, 10}, {1 << 20, 100}, {4 << 20, 100}, {8 << 20, 100}, {16 << 20, 100}} {
			cs = append(cs, abBigMessageCase(fmt.Sprintf("9.%d.%d", sub+1, i+1),
				fmt.Sprintf("Send %s message with payload of length %s.", abKind(binary), size(sz.n)),
				binary, pattern, sz.n, 0, 0, sz.wait*time.Second))
		}
	}
	// 9.3 / 9.4: a 4 MiB message in fragments of increasing size.
	for sub, binary := range []bool{false, true} {
		pattern := map[bool]string{false: "*", true: "\xfe"}[binary]
		for i, frag := range []int{64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20} {
			cs = append(cs, abBigMessageCase(fmt.Sprintf("9.%d.%d", sub+3, i+1),
				fmt.Sprintf("Send fragmented %s message with message payload of length 4M. Sent out in fragments of %d.", abKind(binary), frag),
				binary, pattern, 4<<20, frag, 0, 100*time.Second))
		}
	}
	// 9.5 / 9.6: a 1 MiB message written in chops of increasing size.
	for sub, binary := range []bool{false, true} {
		pattern := map[bool]string{false: textPattern, true: binaryPattern}[binary]
		for i, chop := range []int{64, 128, 256, 512, 1024, 2048} {
			cs = append(cs, abBigMessageCase(fmt.Sprintf("9.%d.%d", sub+5, i+1),
				fmt.Sprintf("Send %s message with payload of length 1M. Sent out data in chops of %d octets.", abKind(binary), chop),
				binary, pattern, 1<<20, 0, chop, 1000*time.Second))
		}
	}
	// 9.7 / 9.8: 1000 round trips of increasing message size.
	for sub, binary := range []bool{false, true} {
		for i, rt := range []struct {
			n    int
			wait time.Duration
		}{{0, 60}, {16, 60}, {64, 60}, {256, 120}, {1024, 240}, {4096, 480}} {
			cs = append(cs, abRoundTripCase(fmt.Sprintf("9.%d.%d", sub+7, i+1),
				fmt.Sprintf("Send 1000 %s messages of payload size %d to measure implementation/network RTT (round trip time) / latency.", abKind(binary), rt.n),
				binary, rt.n, 1000, rt.wait*time.Second))
		}
	}
	return cs
}

func abKind(binary bool) string {
	if binary {
		return "binary"
	}
	return "text"
}

func abOpcodeFor(binary bool) byte {
	if binary {
		return abOpBinary
	}
	return abOpText
}

// abBigMessageCase is Case9_1_1 and its kin: send size octets of pattern as
// one frame (written in chops of chop octets if chop > 0) or, if fragSize >
// 0, with sendMessage in fragments of fragSize; close after wait; judge the
// echo by type and length. Autobahn does not compare the content; the
// harness notes a mismatch. The payload is built when the case runs.
func abBigMessageCase(id, desc string, binary bool, pattern string, size, fragSize, chop int, wait time.Duration) abCase {
	return abCase{id: id, desc: desc, reportTime: true, deadline: abLimitsDeadline, open: func(s *abSession) {
		s.behavior, s.result = abFailed, fmt.Sprintf("Did not receive message within %v.", wait)
		s.expectedClose = abCleanNormalClose()
		payload := abRepeat(pattern, size)
		if fragSize > 0 {
			s.sendMessage(payload, binary, fragSize)
		} else {
			s.sendFrame(abFrame{opcode: abOpcodeFor(binary), payload: payload, fin: true, chop: chop})
		}
		s.closeAfter(wait)
		s.onMessage = func(got []byte, gotBinary bool) {
			switch {
			case gotBinary != binary:
				s.result = fmt.Sprintf("Expected %s message with payload, but got %s.", abKind(binary), abKind(gotBinary))
			case len(got) != size:
				s.result = fmt.Sprintf("Expected %s message with payload of length %d, but got %d.", abKind(binary), size, len(got))
			default:
				s.behavior, s.result = abOK, fmt.Sprintf("Received %s message of length %d.", abKind(binary), len(got))
				if !bytes.Equal(got, payload) {
					s.notes = append(s.notes, "the echoed payload differs from the one sent")
				}
			}
			s.sendCloseFrame(abCloseNormal, nil, false)
		}
	}}
}

// abRoundTripCase is Case9_7_X/9_8_X: send a message, wait for its echo,
// repeat count times.
func abRoundTripCase(id, desc string, binary bool, size, count int, wait time.Duration) abCase {
	return abCase{id: id, desc: desc, reportTime: true, deadline: abLimitsDeadline, open: func(s *abSession) {
		s.behavior, s.result = abFailed, fmt.Sprintf("Case did not finish within %v.", wait)
		s.expectedClose = abCleanNormalClose()
		s.closeAfter(wait)
		msg := abFr(abOpText, strings.Repeat("*", size))
		if binary {
			msg = abFr(abOpBinary, strings.Repeat("\xfe", size))
		}
		sent := 0
		sendOne := func() { s.sendFrame(msg); sent++ }
		s.onMessage = func(got []byte, gotBinary bool) {
			switch {
			case gotBinary != binary || len(got) != size:
				s.behavior = abFailed
				s.result = fmt.Sprintf("Echo'ed message type or length differs from what I sent (got binary = %v, payload length = %d).", gotBinary, len(got))
				s.sendCloseFrame(abCloseNormal, nil, false)
			case sent < count:
				sendOne()
			default:
				s.behavior, s.result = abOK, "Ok, received all echo'ed messages in time."
				s.sendCloseFrame(abCloseNormal, nil, false)
			}
		}
		sendOne()
	}}
}

// 10.1.1: a 64 KiB text message auto-fragmented into 1300-octet frames.
// Autobahn also checks it sent 1 text and 50 continuation frames.
func abAutoFragmentationCases() []abCase {
	payload := strings.Repeat("*", 65536)
	const fragSize = 1300
	return []abCase{{
		id: "10.1.1", desc: "Send text message with payload of length 65536 auto-fragmented with autoFragmentSize = 1300.",
		expect: []abOutcome{abWant(abOK, abTextMsg(payload))}, close: abCleanNormalClose(),
		steps: []abStep{abSendMessage(payload, false, fragSize)}, timer: abKillAfter(10 * time.Second),
		lost: func(s *abSession, r *abResult) {
			wantCont, wantText := len(payload)/fragSize, 0
			if len(payload)%fragSize > 0 {
				wantText = 1
			}
			if s.txFrames[abOpCont] != wantCont || s.txFrames[abOpText] != wantText {
				r.behavior = abFailed
				r.result = fmt.Sprintf("Frames transmitted {0: %d, 1: %d} does not match what we expected {0: %d, 1: %d}.",
					s.txFrames[abOpCont], s.txFrames[abOpText], wantCont, wantText)
			}
		},
	}}
}
