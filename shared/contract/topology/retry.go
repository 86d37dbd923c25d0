package topology

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Timings of [Retry].
const (
	// DefaultSetupTimeout bounds a [Retry] whose Timeout is zero; the
	// programs use NATS_CONNECT_TIMEOUT, whose default it is.
	DefaultSetupTimeout = 30 * time.Second
	// firstWait is the wait after the first failed attempt; it doubles
	// after each one, up to maxWait. A cluster elects its meta leader about
	// half a second after a majority of its servers run, so the first
	// waits are short.
	firstWait = 100 * time.Millisecond
	maxWait   = 2 * time.Second
	// conflictWait is the wait after losing a race to create an object
	// another process created at the same moment: reading it back and
	// updating it can start at once. It doubles too, up to maxWait.
	conflictWait = 20 * time.Millisecond
	// firstAttemptTimeout bounds one request to the JetStream API. A
	// cluster that has no meta leader yet does not answer at all (for its
	// first 10 seconds; then it answers "temporarily unavailable"), and a
	// request it dropped is not answered once the leader is elected, so a
	// short bound lets the next attempt start soon after. An R3 stream or
	// consumer is created in about 100 ms on loopback. Every second attempt
	// that times out doubles the bound, up to maxAttemptTimeout, for a
	// cluster that is slow rather than leaderless: doubling after every
	// one made programs started with a leaderless cluster ready 5.4 s after
	// its last nodes started (TestStartOrder), against about 3 s with 2 s,
	// 2 s, 4 s, 4 s, 8 s.
	// The server carries on with a create whose caller gave up, so the
	// next attempt finds the object and only updates it.
	firstAttemptTimeout = 2 * time.Second
	maxAttemptTimeout   = 8 * time.Second
)

// Retry is how the programs create or update their JetStream objects (the
// streams, the consumer and the key-value bucket) against a server or
// cluster that is still starting, electing leaders or waiting for its
// peers: every set-up goes through [Retry.Do].
//
// An attempt that fails for a reason that time mends is tried again after
// a wait that grows from 100 ms to 2 s, with one log line per attempt
// saying what the set-up waits for: a meta leader, the JetStream API to
// answer, enough servers to place the replicas, the NATS connection. A
// race with another process creating the same object at the same moment
// is tried again at once; the next attempt reads the object back and
// updates it, so every process converges on one object. Any other error
// (a configuration the server refuses) is returned at once, and so is
// every error once Timeout has passed, with what was waited for and what
// to check. The zero Retry waits [DefaultSetupTimeout] and logs nothing,
// for tests. A Retry is a value: safe for concurrent use.
type Retry struct {
	// Timeout bounds all attempts of one set-up (and each attempt's
	// context is bounded by it). The programs pass NATS_CONNECT_TIMEOUT.
	// Defaults to [DefaultSetupTimeout].
	Timeout time.Duration
	// Logger gets one line, at level INFO, for each failed attempt that
	// will be tried again. Nil logs nothing.
	Logger *slog.Logger
	// Waiting, if set, is called before each wait with a sentence saying
	// what the set-up waits for, e.g. for a readiness check to report it.
	// It must return quickly.
	Waiting func(reason string)
}

// wait is what a failed attempt waits for, when time may mend it.
type wait struct {
	// reason completes "waiting for …".
	reason string
	// check is what an operator should check when it never comes.
	check string
	// conflict marks a lost creation race, tried again at once.
	conflict bool
}

// classify reports what err waits for, or false when waiting does not
// mend it. It reads nats.go's error values and the JetStream API's error
// codes (nats-server's jetstream_errors_generated.go).
func classify(err error) (wait, bool) {
	var jerr jetstream.JetStreamError
	if errors.As(err, &jerr) {
		if api := jerr.APIError(); api != nil {
			return classifyAPI(api)
		}
	}
	switch {
	case errors.Is(err, context.Canceled),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, jetstream.ErrConnectionClosed):
		return wait{}, false
	case errors.Is(err, jetstream.ErrBucketExists), errors.Is(err, jetstream.ErrConsumerNameAlreadyInUse):
		return conflict, true
	case errors.Is(err, nats.ErrNoResponders):
		return jetStreamStarting, true
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return noAnswer, true
	case errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrNoServers), errors.Is(err, nats.ErrConnectionDraining):
		return connection, true
	}
	return wait{}, false
}

// JetStream API error codes of transient cluster states, from
// nats-server's jetstream_errors_generated.go.
const (
	codeClusterIncomplete     = 10004 // JSClusterIncompleteErr: incomplete results
	codeClusterNoPeers        = 10005 // JSClusterNoPeersErrF: no suitable peers for placement
	codeClusterNotAvail       = 10008 // JSClusterNotAvailErr: JetStream system temporarily unavailable
	codeClusterNotLeader      = 10009 // JSClusterNotLeaderErr: JetStream cluster can not handle request
	codeConsumerNameExist     = 10013 // JSConsumerNameExistErr: consumer name already in use
	codeInsufficientResources = 10023 // JSInsufficientResourcesErr
	codeNotEnabledForAccount  = 10039 // JSNotEnabledForAccountErr
	codeStreamNameExist       = 10058 // JSStreamNameExistErr: stream name already in use with a different configuration
	codeReplicasNotSupported  = 10074 // JSStreamReplicasNotSupportedErr: replicas > 1 not supported in non-clustered mode
	codePeerRemap             = 10075 // JSPeerRemapErr
	codeNotEnabled            = 10076 // JSNotEnabledErr: JetStream not enabled
	codeConsumerExists        = 10148 // JSConsumerAlreadyExists
	codeMemberChangeInflight  = 10202 // JSClusterServerMemberChangeInflightErr
	codeReconfigureInProgress = 10226 // JSStreamReconfigureInProgressErr
	httpServiceUnavailable    = 503
)

// What the set-up waits for.
var (
	metaLeader = wait{
		reason: "the JetStream cluster to elect a meta leader",
		check:  "that a majority of the cluster's servers run, with JetStream, and reach each other on their cluster routes",
	}
	leaderChange = wait{
		reason: "the JetStream cluster to finish a leader change",
		check:  "that a majority of the cluster's servers run and reach each other",
	}
	placement = wait{
		reason: "enough JetStream servers in the cluster to place the replicas",
		check:  "that at least INGEST_REPLICAS servers run JetStream in one cluster and have room (max_file_store); lower INGEST_REPLICAS if the cluster is smaller",
	}
	jetStreamStarting = wait{
		reason: "JetStream to start on the server (nothing answers the JetStream API yet)",
		check:  "that the NATS servers run with JetStream enabled (-js, or a jetstream block in their config)",
	}
	noAnswer = wait{
		reason: "the JetStream API to answer (a cluster without a meta leader does not)",
		check:  "that a majority of the cluster's servers run, with JetStream, and reach each other on their cluster routes",
	}
	connection = wait{
		reason: "the NATS connection to come back",
		check:  "that the NATS servers in NATS_URL run and are reachable",
	}
	serverBusy = wait{
		reason: "the JetStream server to become available",
		check:  "the NATS servers' logs",
	}
	conflict = wait{
		reason:   "another process that created it at the same moment; reading it back to update it",
		check:    "that every gateway and worker has the same INGEST_* and DLQ_* settings",
		conflict: true,
	}
)

func classifyAPI(api *jetstream.APIError) (wait, bool) {
	switch api.ErrorCode {
	case codeClusterNotAvail:
		return metaLeader, true
	case codeClusterNotLeader, codeClusterIncomplete, codePeerRemap, codeMemberChangeInflight, codeReconfigureInProgress:
		return leaderChange, true
	case codeClusterNoPeers, codeInsufficientResources:
		// Also what a cluster of fewer servers than replicas answers
		// for good. From the error alone the two cannot be told apart:
		// a forming cluster whose third server has not joined yet
		// answers the same code as a three-server cluster asked for
		// five replicas. Time tells them apart; the message at the end
		// says what to check.
		return placement, true
	case codeNotEnabled:
		return jetStreamStarting, true
	case codeStreamNameExist, codeConsumerNameExist, codeConsumerExists:
		return conflict, true
	case codeNotEnabledForAccount, codeReplicasNotSupported:
		return wait{}, false
	}
	if api.Code == httpServiceUnavailable {
		return serverBusy, true
	}
	return wait{}, false
}

// permanentHint says what to do about an error waiting does not mend, when
// jetline knows; "" otherwise.
func permanentHint(err error) string {
	var jerr jetstream.JetStreamError
	if !errors.As(err, &jerr) || jerr.APIError() == nil {
		return ""
	}
	switch jerr.APIError().ErrorCode {
	case codeReplicasNotSupported:
		return "the NATS server is not part of a cluster: set INGEST_REPLICAS=1, or run a JetStream cluster"
	case codeNotEnabledForAccount:
		return "the NATS account jetline connects as has no JetStream: enable JetStream for it in the server's configuration"
	}
	return ""
}

// Do runs op until it succeeds, fails in a way waiting does not mend, ctx
// is done or r.Timeout has passed. what names the set-up in log lines and
// errors, e.g. "create or update stream INGEST"; the error returned starts
// with it. Each attempt's context is bounded (see [Retry]). A ctx that is
// done ends Do with ctx's error.
func (r Retry) Do(ctx context.Context, what string, op func(ctx context.Context) error) error {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultSetupTimeout
	}
	start := time.Now()
	deadline := start.Add(timeout)
	pause, conflictPause, timeouts := firstWait, conflictWait, 0
	for attempt := 1; ; attempt++ {
		attemptTimeout := min(firstAttemptTimeout<<(timeouts/2), maxAttemptTimeout)
		actx, cancel := context.WithDeadline(ctx, minTime(deadline, time.Now().Add(attemptTimeout)))
		err := op(actx)
		cancel()
		if err == nil {
			if attempt > 1 && r.Logger != nil {
				r.Logger.InfoContext(ctx, "jetstream set-up done", "what", what, "attempts", attempt, "waited", time.Since(start).Round(time.Millisecond))
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
		w, transient := classify(err)
		if !transient {
			if hint := permanentHint(err); hint != "" {
				return fmt.Errorf("%s: %w: %s", what, err, hint)
			}
			return fmt.Errorf("%s: %w", what, err)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			timeouts = min(timeouts+1, 8)
		}
		next := pause
		if w.conflict {
			// A race is lost once; a conflict that persists (two
			// processes with different settings) backs off as well.
			next, conflictPause = conflictPause, min(2*conflictPause, maxWait)
		} else {
			pause = min(2*pause, maxWait)
		}
		// Jitter keeps processes started together from retrying in step.
		next += rand.N(next/4 + 1)
		if time.Now().Add(next).After(deadline) {
			return fmt.Errorf("%s: gave up after %s and %d attempts (NATS_CONNECT_TIMEOUT is %s) waiting for %s: %w; check %s",
				what, time.Since(start).Round(time.Millisecond), attempt, timeout, w.reason, err, w.check)
		}
		reason := "waiting for " + w.reason
		if r.Waiting != nil {
			r.Waiting(fmt.Sprintf("%s; retrying %s (attempt %d)", reason, what, attempt))
		}
		if r.Logger != nil {
			r.Logger.InfoContext(ctx, reason+"; retrying "+what+" in "+next.Round(time.Millisecond).String(),
				"attempt", attempt, "retry_in", next.Round(time.Millisecond), "err", err)
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// CreateOrUpdateStream creates the stream cfg or updates it to cfg, through
// [Retry.Do]. Two processes creating it at once both succeed: the one that
// loses the race reads it back and updates it.
func (r Retry) CreateOrUpdateStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	var s jetstream.Stream
	err := r.Do(ctx, "create or update stream "+cfg.Name+withReplicas(cfg.Replicas), func(ctx context.Context) error {
		var err error
		s, err = js.CreateOrUpdateStream(ctx, cfg)
		return err
	})
	return s, err
}

// CreateOrUpdateConsumer creates the durable consumer cfg on stream or
// updates it to cfg, through [Retry.Do].
func (r Retry) CreateOrUpdateConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	var c jetstream.Consumer
	err := r.Do(ctx, "create or update consumer "+cfg.Durable+" on "+stream, func(ctx context.Context) error {
		var err error
		c, err = js.CreateOrUpdateConsumer(ctx, stream, cfg)
		return err
	})
	return c, err
}

// CreateOrUpdateKeyValue creates the key-value bucket cfg or updates it to
// cfg, through [Retry.Do].
func (r Retry) CreateOrUpdateKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	var kv jetstream.KeyValue
	err := r.Do(ctx, "create or update key-value bucket "+cfg.Bucket+withReplicas(cfg.Replicas), func(ctx context.Context) error {
		var err error
		kv, err = js.CreateOrUpdateKeyValue(ctx, cfg)
		return err
	})
	return kv, err
}

// withReplicas names the replicas asked for, which a server that cannot
// place them does not say.
func withReplicas(n int) string {
	if n <= 1 {
		return ""
	}
	return fmt.Sprintf(" with %d replicas", n)
}
