package topology

import (
	"bytes"
	"iter"
	"strconv"
	"strings"
)

// LineIDs makes the identities of one connection's lines,
// "<instance>.<conn>.<line>": the gateway instance, its connection number
// and the 1-based line number. A line keeps its identity for its whole
// life: it is the Nats-Msg-Id of the frame it starts, the key of its row
// when the pipeline has none of its own, and the [HeaderLineID] of its
// dead letter, which a replay carries back. The value is the prefix
// "<instance>.<conn>.".
type LineIDs string

// ConnLineIDs returns the line identities of connection conn of the
// gateway instance.
func ConnLineIDs(instance, conn string) LineIDs {
	return LineIDs(instance + "." + conn + ".")
}

// Line returns the identity of line number line.
func (p LineIDs) Line(line int64) string {
	return string(p.Append(nil, line))
}

// Append appends the identity of line number line to dst.
func (p LineIDs) Append(dst []byte, line int64) []byte {
	return strconv.AppendInt(append(dst, p...), line, 10)
}

// FrameLineIDs returns the line identities of a gateway's frame from its
// message id and first line number (headers [HeaderMsgID] and
// [HeaderLine]): the frame's k-th line is LineIDs.Line(first+k). It
// reports false when msgID is not the identity of line first, as for
// messages other programs publish.
func FrameLineIDs(msgID string, first int64) (LineIDs, bool) {
	if first < 1 {
		return "", false
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
