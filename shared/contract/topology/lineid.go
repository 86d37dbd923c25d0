package topology

import (
	"bytes"
	"iter"
	"strconv"
	"strings"
	"time"
)

// LineIDs makes the identities of a run of numbered lines: a prefix
// followed by the line's number. The gateway's are one connection's,
// "<instance>.<conn>.<line>" ([ConnLineIDs]); the lines of a message of
// several that another program published are numbered after its stream
// sequence ([SeqLineIDs.Lines]). A line keeps its identity for its whole
// life: it is the Nats-Msg-Id of the frame it starts, the key of its row
// when the pipeline has none of its own, and the [HeaderLineID] of its
// dead letter, which a replay carries back. Every line id is made by
// [LineIDs.Append]; a named upload's lines are another run, with another
// prefix ([UploadLineIDs]), and [FrameLineIDs] reads the prefix back from
// any of them. The value is the prefix, ending in ".".
type LineIDs string

// ConnLineIDs returns the line identities of connection conn of the
// gateway instance: "<instance>.<conn>.<line>".
func ConnLineIDs(instance, conn string) LineIDs {
	return LineIDs(instance + "." + conn + ".")
}

// UploadLineIDs returns the line identities of the named upload name on
// source: "<source>/<name>.<line>", the same on every gateway and
// connection, so a file sent again under its name keys the same rows.
func UploadLineIDs(source, name string) LineIDs {
	return LineIDs(source + "/" + name + ".")
}

// Line returns the identity of line number line.
func (p LineIDs) Line(line int64) string {
	return string(p.Append(nil, line))
}

// Append appends the identity of line number line to dst.
func (p LineIDs) Append(dst []byte, line int64) []byte {
	return strconv.AppendInt(append(dst, p...), line, 10)
}

// AppendUploadFrame appends the message id of a named upload's frame of
// lines lines from line first to dst: the first line's identity, followed
// by "+<lines>" when the frame holds more than one. The count keeps a
// frame apart from a frame of the same first line but fewer lines, which
// the upload sent before under its name (a send cut short, framed at other
// read boundaries): JetStream would otherwise drop the longer frame as a
// duplicate, and with it the lines the shorter one did not hold.
func (p LineIDs) AppendUploadFrame(dst []byte, first, lines int64) []byte {
	dst = p.Append(dst, first)
	if lines > 1 {
		dst = strconv.AppendInt(append(dst, '+'), lines, 10)
	}
	return dst
}

// SeqLineIDs makes the identities of lines published without a message
// id, by other programs than the gateway, from their message's sequence
// in the ingest stream: "<created>.<seq>" for a message's only line and
// "<created>.<seq>.<k>" for the k-th (from 1) of several, where created
// is when the stream was created, in Unix nanoseconds, so the lines of a
// stream deleted and created again do not take the identities of the old
// stream's lines. The value is the prefix "<created>.", or "" for a
// stream whose creation is not known (lines are then "<seq>" and
// "<seq>.<k>", which suits tests and tools).
type SeqLineIDs string

// StreamSeqLineIDs returns the identities of the lines of a stream
// created at created; the zero time leaves it out (see [SeqLineIDs]).
func StreamSeqLineIDs(created time.Time) SeqLineIDs {
	if created.IsZero() {
		return ""
	}
	return SeqLineIDs(strconv.FormatInt(created.UnixNano(), 10) + ".")
}

// Message returns the identity of the only line of message seq.
func (s SeqLineIDs) Message(seq uint64) string {
	return string(strconv.AppendUint([]byte(s), seq, 10))
}

// Lines returns the identities of the lines of message seq when it holds
// several: its k-th line, from 1, is Lines(seq).Line(k).
func (s SeqLineIDs) Lines(seq uint64) LineIDs {
	return LineIDs(s.Message(seq) + ".")
}

// FrameLineIDs returns the line identities of a gateway's frame from its
// message id, first line number and line count (headers [HeaderMsgID],
// [HeaderLine] and [HeaderLines]): the frame's k-th line is
// LineIDs.Line(first+k). The message id is the identity of line first,
// optionally followed by "+<lines>" ([LineIDs.AppendUploadFrame]). It
// reports false when msgID is neither, as for messages other programs
// publish.
func FrameLineIDs(msgID string, first, lines int64) (LineIDs, bool) {
	if first < 1 {
		return "", false
	}
	if lines > 1 {
		msgID, _ = strings.CutSuffix(msgID, "+"+strconv.FormatInt(lines, 10))
	}
	prefix, ok := strings.CutSuffix(msgID, "."+strconv.FormatInt(first, 10))
	if !ok || prefix == "" {
		return "", false
	}
	return LineIDs(prefix + "."), true
}

// Lines yields the lines of a frame's payload in order, each with k, its
// 0-based position among the payload's physical lines: line k of a
// gateway's frame is line HeaderLine+k of its connection. A line ends
// with "\n" or "\r\n", which is not part of it; a last line without one
// is a line too; blank lines are skipped (the gateway never puts one in a
// frame, but other programs may). The lines are slices of payload.
func Lines(payload []byte) iter.Seq2[int, []byte] {
	return func(yield func(int, []byte) bool) {
		for k := 0; len(payload) > 0; k++ {
			line, rest, _ := bytes.Cut(payload, []byte{'\n'})
			payload = rest
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			if len(line) > 0 && !yield(k, line) {
				return
			}
		}
	}
}
