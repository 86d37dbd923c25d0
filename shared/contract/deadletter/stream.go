package deadletter

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
)

// EnsureStream creates the dead-letter stream or updates it to cfg, with
// replicas replicas (the ingest stream's INGEST_REPLICAS), retried as the
// zero [topology.Retry] does. It is idempotent and safe to call from every
// process at once. The programs call [EnsureStreamWith].
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg Config, replicas int) (jetstream.Stream, error) {
	return EnsureStreamWith(ctx, js, cfg, replicas, topology.Retry{})
}

// EnsureStreamWith is [EnsureStream] waiting as retry says for a server or
// cluster that cannot take the stream yet. Both programs call it right
// after [topology.Retry.EnsureStream], so either may write the first dead
// letter.
func EnsureStreamWith(ctx context.Context, js jetstream.JetStream, cfg Config, replicas int, retry topology.Retry) (jetstream.Stream, error) {
	return retry.CreateOrUpdateStream(ctx, js, cfg.Stream(replicas))
}
