package deadletter

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// EnsureStream creates the dead-letter stream or updates it to cfg, with
// replicas replicas (the ingest stream's INGEST_REPLICAS). It is
// idempotent and safe to call from every process at start; both programs
// call it right after topology.EnsureStream, so either may write the first
// dead letter.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg Config, replicas int) (jetstream.Stream, error) {
	s, err := js.CreateOrUpdateStream(ctx, cfg.Stream(replicas))
	if err != nil {
		return nil, fmt.Errorf("create or update stream %s: %w", StreamName, err)
	}
	return s, nil
}
