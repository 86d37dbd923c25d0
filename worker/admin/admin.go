// Package admin does what the worker program's operator commands do:
// `worker dlq` (list, show, replay and purge the dead letters in the
// deadletter stream) and `worker status` (one look at the pipeline: the
// ingest stream, the consumer, the running workers and the dead letters).
// The commands in worker/cmd/worker parse flags and print; everything that
// talks to JetStream is here, so it can be tested against a real server.
// Both commands read the same streams through the same lookups, subject
// parsing and counts, and are tested on one setup, which is why they share
// a package.
//
// Every operation reads the streams as they are and creates nothing: a
// missing stream is reported with [ErrNoDeadLetters] or [ErrNoIngest].
package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
)

// ErrNoDeadLetters is returned when the dead-letter stream does not exist:
// nothing has been dead-lettered since NATS was set up.
var ErrNoDeadLetters = errors.New("no dead letters yet: stream " + deadletter.StreamName + " does not exist")

// ErrNoIngest is returned when the ingest stream does not exist, so there
// is nowhere to replay to and nothing to report on.
var ErrNoIngest = errors.New("stream " + topology.StreamName + " does not exist: start a worker or the gateway, which create it with its configured limits")

// deadLetters returns the dead-letter stream.
func deadLetters(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, deadletter.StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, ErrNoDeadLetters
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", deadletter.StreamName, err)
	}
	return s, nil
}

// ingest returns the ingest stream.
func ingest(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, topology.StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, ErrNoIngest
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", topology.StreamName, err)
	}
	return s, nil
}

// subjectParts splits a dead-letter subject dlq.<source>.<reason>; ok is
// false for any other subject.
func subjectParts(subject string) (source, reason string, ok bool) {
	rest, found := strings.CutPrefix(subject, deadletter.SubjectPrefix)
	if !found {
		return "", "", false
	}
	source, reason, found = strings.Cut(rest, ".")
	return source, reason, found && source != "" && reason != "" && !strings.Contains(reason, ".")
}
