package worker

import (
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DeadLetterPublisher publishes dead letters to the INGEST_DLQ stream.
// jetstream.JetStream satisfies it. PublishMsgAsync is called from several
// goroutines at once; the worker waits on the returned futures and never
// closes the publisher.
type DeadLetterPublisher interface {
	PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}
