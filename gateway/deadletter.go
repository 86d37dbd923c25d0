package gateway

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
)

// tooLong publishes the dead-letter entry of the oversize line numbered
// line, of length bytes, which starts with kept: reason too_long, on
// dlq.<source>.too_long, with the headers the line would have had. It goes
// through the connection's window like a line, so the receipt is ok only
// once the entry is stored, and its message id lets a retry store it once.
// It blocks and fails as [publisher.publish] does. See [frameSink].
func (s *session) tooLong(ctx context.Context, kept []byte, length, line int64) error {
	s.metrics.lineTooLong()
	// One log line per connection: a sender with the wrong limit sends
	// many oversize lines, and each is counted in the receipt and in the
	// connection's closing log line anyway.
	if !s.toldTooLong {
		s.toldTooLong = true
		s.logger.Warn("line too long; skipped and written to the dead-letter stream (further ones on this connection are only counted)",
			"line", line, "length", length, "max_line_bytes", s.cfg.maxLine, "kept_bytes", len(kept), "stream", deadletter.StreamName)
	}
	// The identity and headers the line would have had in its frame.
	p := s.publisher()
	id := p.ids.Line(line)
	e := deadletter.Entry{
		Subject: s.subject,
		Reason:  deadletter.ReasonTooLong,
		Class:   deadletter.ClassPermanent,
		Error:   fmt.Sprintf("line of %d bytes exceeds GATEWAY_MAX_LINE_BYTES=%d", length, s.cfg.maxLine),
		By:      s.instance,
		At:      time.Now(),
		Length:  length,
		// kept is the framer's, valid until its next line.
		Data: bytes.Clone(kept),
		Header: nats.Header{
			// The identity workers would have keyed the line's row by:
			// the message id it would have had.
			topology.HeaderLineID:     {id},
			topology.HeaderGateway:    p.gateway,
			topology.HeaderConn:       p.conn,
			topology.HeaderLine:       {id[len(p.ids):]},
			topology.HeaderReceivedAt: s.stamp(),
		},
	}
	if p.upload != nil {
		e.Header[topology.HeaderUpload] = p.upload
	}
	return p.publishDeadLetter(ctx, e.Msg("dlq."+id), line)
}
