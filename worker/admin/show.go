package admin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
)

// ShowBytes is how much of a line [WriteEntry] shows unless asked for all.
const ShowBytes = 4 << 10

// Show returns the dead letter with sequence seq. An entry that was not
// written by jetline is returned with the error saying so, and with what
// the stream holds (Seq, Header, Data, At).
func Show(ctx context.Context, js jetstream.JetStream, seq uint64) (deadletter.Entry, error) {
	s, err := deadLetters(ctx, js)
	if err != nil {
		return deadletter.Entry{}, err
	}
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return deadletter.Entry{}, fmt.Errorf("no dead letter %d in %s: it was replayed, purged or aged out, or never existed (worker dlq list shows the range)", seq, deadletter.StreamName)
	}
	if err != nil {
		return deadletter.Entry{}, fmt.Errorf("read dead letter %d: %w", seq, err)
	}
	return deadletter.Decode(m)
}

// WriteEntry writes e for a terminal: what went wrong, then every header,
// then the line — its first [ShowBytes] unless full.
func WriteEntry(out io.Writer, e deadletter.Entry, full bool) error {
	w := bufio.NewWriter(out)
	field := func(name, value string) {
		if value != "" {
			fmt.Fprintf(w, "%-12s %s\n", name+":", value)
		}
	}
	num := func(n uint64) string {
		if n == 0 {
			return ""
		}
		return fmt.Sprint(n)
	}
	field("seq", fmt.Sprint(e.Seq))
	field("reason", e.Reason)
	field("class", e.Class)
	field("error", e.Error)
	field("subject", e.Subject)
	field("line id", e.Header.Get(topology.HeaderLineID))
	field("upload", e.Header.Get(topology.HeaderUpload))
	field("ingest seq", num(e.StreamSeq))
	field("deliveries", num(e.Deliveries))
	field("by", e.By)
	if !e.At.IsZero() {
		field("at", e.At.UTC().Format(time.RFC3339Nano))
	}
	field("length", fmt.Sprintf("%d bytes", e.Length))

	fmt.Fprintln(w, "\nheaders:")
	keys := make([]string, 0, len(e.Header))
	for k := range e.Header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range e.Header[k] {
			fmt.Fprintf(w, "  %s: %s\n", k, v)
		}
	}

	data := e.Data
	fmt.Fprintln(w, "\nline:")
	var notes []string
	if !full && len(data) > ShowBytes {
		cut := ShowBytes
		for cut > 0 && !utf8.RuneStart(data[cut]) {
			cut--
		}
		data = data[:cut]
		notes = append(notes, fmt.Sprintf("showing the first %d of %d bytes kept; --full shows all", len(data), len(e.Data)))
	}
	if e.Truncated() {
		notes = append(notes, fmt.Sprintf("the line was %d bytes; only the first %d were kept (it cannot be replayed)", e.Length, len(e.Data)))
	}
	w.Write(data)
	if len(data) == 0 || data[len(data)-1] != '\n' {
		fmt.Fprintln(w)
	}
	for _, n := range notes {
		fmt.Fprintf(w, "(%s)\n", n)
	}
	return w.Flush()
}
