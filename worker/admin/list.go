package admin

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
)

// Group counts the dead letters of one reason and source, and of one named
// upload (the lines' Jetline-Upload header) when they belong to one.
type Group struct {
	Reason string `json:"reason"`
	Source string `json:"source"`
	Upload string `json:"upload,omitempty"`
	Count  uint64 `json:"count"`
	// Oldest and Newest are when the group's first and last entries were
	// stored in the stream.
	Oldest time.Time `json:"oldest"`
	Newest time.Time `json:"newest"`
}

// Summary describes the dead letters a [Filter] selects and the stream
// that holds them.
type Summary struct {
	Filter Filter `json:"-"`
	// Groups are the selected entries by reason and source, sorted by
	// reason then source; Entries is their total.
	Groups  []Group `json:"groups"`
	Entries uint64  `json:"entries"`
	// StreamMsgs and StreamBytes are the whole stream's entries and
	// stored bytes, FirstSeq and LastSeq its sequence range.
	StreamMsgs  uint64 `json:"stream_msgs"`
	StreamBytes uint64 `json:"stream_bytes"`
	FirstSeq    uint64 `json:"first_seq"`
	LastSeq     uint64 `json:"last_seq"`
}

// List summarises the dead letters f selects. When f selects by reason
// and source only, it counts from the stream's per-subject totals and reads
// just the first and last entry of each subject for the times, so it
// takes about as long for a million entries as for ten; sequence and time
// ranges need every selected entry's headers, and so does a subject whose
// first or last entry belongs to a named upload, to count by upload.
func List(ctx context.Context, js jetstream.JetStream, f Filter) (Summary, error) {
	s, err := deadLetters(ctx, js)
	if err != nil {
		return Summary{}, err
	}
	sum := Summary{Filter: f}
	if f.BySubjectOnly() {
		err = listBySubject(ctx, s, f, &sum)
	} else {
		err = listByScan(ctx, s, f, &sum)
	}
	if err != nil {
		return Summary{}, err
	}
	slices.SortFunc(sum.Groups, func(a, b Group) int {
		return strings.Compare(a.Reason+"\x00"+a.Source+"\x00"+a.Upload, b.Reason+"\x00"+b.Source+"\x00"+b.Upload)
	})
	for _, g := range sum.Groups {
		sum.Entries += g.Count
	}
	return sum, nil
}

// listBySubject fills sum from the stream's subject totals.
func listBySubject(ctx context.Context, s jetstream.Stream, f Filter, sum *Summary) error {
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(f.Subject()))
	if err != nil {
		return fmt.Errorf("read stream %s: %w", deadletter.StreamName, err)
	}
	sum.setStream(info)
	for subject, n := range info.State.Subjects {
		g := groupOf(subject)
		g.Count = n
		first, err := s.GetMsg(ctx, info.State.FirstSeq, jetstream.WithGetMsgSubject(subject))
		if err != nil {
			return fmt.Errorf("read the first dead letter on %s: %w", subject, err)
		}
		last, err := s.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			return fmt.Errorf("read the last dead letter on %s: %w", subject, err)
		}
		if first.Header.Get(topology.HeaderUpload) != "" || last.Header.Get(topology.HeaderUpload) != "" {
			// Lines of named uploads: counted by upload.
			groups, err := scanGroups(ctx, s, Filter{Reason: g.Reason, Source: g.Source})
			if err != nil {
				return err
			}
			sum.Groups = append(sum.Groups, groups...)
			continue
		}
		g.Oldest, g.Newest = first.Time, last.Time
		sum.Groups = append(sum.Groups, g)
	}
	return nil
}

// scanGroups counts the entries f selects by subject and upload, reading
// the headers of each.
func scanGroups(ctx context.Context, s jetstream.Stream, f Filter) ([]Group, error) {
	groups := map[string]*Group{}
	var order []string
	err := scan(ctx, s, f, true, func(l letter) error {
		upload := l.Entry.Header.Get(topology.HeaderUpload)
		key := l.Subject + "\x00" + upload
		g := groups[key]
		if g == nil {
			gg := groupOf(l.Subject)
			gg.Upload, gg.Oldest = upload, l.Time
			g = &gg
			groups[key] = g
			order = append(order, key)
		}
		g.Count++
		g.Newest = l.Time
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]Group, 0, len(order))
	for _, k := range order {
		out = append(out, *groups[k])
	}
	return out, nil
}

// listByScan fills sum by reading the headers of every selected entry.
func listByScan(ctx context.Context, s jetstream.Stream, f Filter, sum *Summary) error {
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", deadletter.StreamName, err)
	}
	sum.setStream(info)
	groups, err := scanGroups(ctx, s, f)
	sum.Groups = groups
	return err
}

func (sum *Summary) setStream(info *jetstream.StreamInfo) {
	sum.StreamMsgs, sum.StreamBytes = info.State.Msgs, info.State.Bytes
	sum.FirstSeq, sum.LastSeq = info.State.FirstSeq, info.State.LastSeq
}

// groupOf names the group of a dead-letter subject. Entries someone put on
// another subject of the stream are grouped under reason "?".
func groupOf(subject string) Group {
	source, reason, ok := subjectParts(subject)
	if !ok {
		return Group{Reason: "?", Source: subject}
	}
	return Group{Reason: reason, Source: source}
}

// WriteSummary writes sum as a table for a terminal.
func WriteSummary(out io.Writer, sum Summary) error {
	w := bufio.NewWriter(out)
	fmt.Fprintf(w, "%s: %s, %s", deadletter.StreamName, Count(sum.StreamMsgs, "dead letter"), Bytes(sum.StreamBytes))
	if sum.StreamMsgs > 0 {
		fmt.Fprintf(w, ", seq %d-%d", sum.FirstSeq, sum.LastSeq)
	}
	fmt.Fprintln(w)
	if len(sum.Groups) == 0 {
		if !sum.Filter.all() {
			fmt.Fprintf(w, "none selected (%s)\n", sum.Filter)
		}
		return w.Flush()
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	uploads := slices.ContainsFunc(sum.Groups, func(g Group) bool { return g.Upload != "" })
	if uploads {
		fmt.Fprintln(tw, "REASON\tSOURCE\tUPLOAD\tCOUNT\tOLDEST\tNEWEST")
	} else {
		fmt.Fprintln(tw, "REASON\tSOURCE\tCOUNT\tOLDEST\tNEWEST")
	}
	for _, g := range sum.Groups {
		if uploads {
			upload := g.Upload
			if upload == "" {
				upload = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", g.Reason, g.Source, upload, g.Count, stamp(g.Oldest), stamp(g.Newest))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", g.Reason, g.Source, g.Count, stamp(g.Oldest), stamp(g.Newest))
	}
	tw.Flush()
	if !sum.Filter.all() {
		fmt.Fprintf(w, "\n%d selected (%s)\n", sum.Entries, sum.Filter)
	}
	return w.Flush()
}

// stamp formats t for a table: UTC, to the second.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// Count formats n things: "1 dead letter", "3 dead letters".
func Count(n uint64, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// Bytes formats n in binary units: 512 B, 1.5 KiB, 312.4 MiB.
func Bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
