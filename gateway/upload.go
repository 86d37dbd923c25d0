package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
)

// uploadHeader starts the header line of a named upload:
//
//	#jetline upload=NAME [first_line=N]
//
// It is not JSON, so no data line is taken for one.
const uploadHeader = "#jetline"

// maxUploadName is the longest upload name accepted.
const maxUploadName = 128

// upload is a named upload, as its header line names it.
type upload struct {
	// name is the upload's name, e.g. "rc-2018-01".
	name string
	// first is the number of the upload's first line after the header
	// (first_line), 1 unless the sender resumes.
	first int64
}

// readUploadHeader reads the first line of fr. If it is a header line (see
// [isUploadHeader]), it returns the upload the header names, or why the
// header is not valid, and numbers the lines after it from the upload's
// first line; the header itself is not a line. Any other first line is
// given back to fr, to be read again as data, and named is false.
func readUploadHeader(fr *framer) (u upload, named bool, err error) {
	rec, tooLong, err := fr.Next()
	if err != nil {
		return upload{}, false, nil // fr returns the error again
	}
	if fr.Line() != 1 || tooLong > 0 || !isUploadHeader(rec) {
		fr.unread(rec, tooLong)
		return upload{}, false, nil
	}
	if u, err = parseUploadHeader(rec); err != nil {
		return upload{}, false, err
	}
	fr.renumber(u.first)
	return u, true, nil
}

// isUploadHeader reports whether line, a connection's first line, is a
// header: "#jetline" alone or followed by a space. Anything else is data.
func isUploadHeader(line []byte) bool {
	rest, ok := bytes.CutPrefix(line, []byte(uploadHeader))
	return ok && (len(rest) == 0 || rest[0] == ' ' || rest[0] == '\t')
}

// parseUploadHeader parses a header line (see [isUploadHeader]). The error
// says what a header may hold.
func parseUploadHeader(line []byte) (upload, error) {
	const usage = `the header is "#jetline upload=NAME", optionally followed by " first_line=N"`
	u := upload{first: 1}
	seen := map[string]bool{}
	for _, field := range strings.Fields(string(line[len(uploadHeader):])) {
		key, value, ok := strings.Cut(field, "=")
		if !ok || (key != "upload" && key != "first_line") {
			return upload{}, fmt.Errorf("upload header field %q is not known: %s", field, usage)
		}
		if seen[key] {
			return upload{}, fmt.Errorf("upload header gives %s twice: %s", key, usage)
		}
		seen[key] = true
		switch key {
		case "upload":
			if err := validateUploadName(value); err != nil {
				return upload{}, err
			}
			u.name = value
		case "first_line":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n < 1 {
				return upload{}, fmt.Errorf("upload header first_line=%s is not a line number: give a whole number from 1, the resume_line of the receipt you resume from", value)
			}
			u.first = n
		}
	}
	if u.name == "" {
		return upload{}, fmt.Errorf("upload header %q names no upload: %s", line, usage)
	}
	return u, nil
}

// validateUploadName checks an upload's name: 1 to [maxUploadName]
// letters, digits, '.', '_', '-' and '/', with no '.' at either end or two
// in a row, so that "<source>/<name>" is a key of the
// [topology.UploadsBucket] bucket.
func validateUploadName(name string) error {
	bad := name == "" || len(name) > maxUploadName || name[0] == '.' || name[len(name)-1] == '.' || strings.Contains(name, "..")
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-', r == '/':
		default:
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("upload name %q is not valid: use 1 to %d letters, digits, '.', '_', '-' and '/', with no '.' at either end or two in a row", name, maxUploadName)
	}
	return nil
}

// uploadNames holds the names of the named uploads a gateway receives, in
// the [topology.UploadsBucket] key-value bucket shared by every gateway,
// so that two connections, to this gateway or another, never send under
// one name on one source at once: their lines would take the same
// identities. A name is held by a key "<source>/<name>" that the session
// creates (refused if it exists), renews every third of the lease while
// the upload runs, and deletes when it ends; the bucket's TTL, the lease,
// drops the key of a gateway that died. Safe for concurrent use.
type uploadNames struct {
	js       jetstream.JetStream
	lease    time.Duration
	replicas int
	instance string
	logger   *slog.Logger

	mu sync.Mutex
	kv jetstream.KeyValue // nil until the bucket is set up
}

// bucketConfig is the uploads bucket's configuration.
func (n *uploadNames) bucketConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      topology.UploadsBucket,
		Description: "jetline: names of the named uploads gateways are receiving, one key <source>/<name> each, renewed while the upload runs",
		History:     1,
		TTL:         n.lease,
		Storage:     jetstream.FileStorage,
		Replicas:    n.replicas,
	}
}

// setup creates or updates the bucket through retry.
func (n *uploadNames) setup(ctx context.Context, retry topology.Retry) (jetstream.KeyValue, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.kv != nil {
		return n.kv, nil
	}
	kv, err := retry.CreateOrUpdateKeyValue(ctx, n.js, n.bucketConfig())
	if err != nil {
		return nil, err
	}
	n.kv = kv
	return kv, nil
}

// holder is the value of a held name's key: who holds it, since when.
type holder struct {
	Gateway string    `json:"gateway"`
	Conn    uint64    `json:"conn"`
	Since   time.Time `json:"since"`
}

// errNameInUse is wrapped by [uploadNames.hold] when another connection
// holds the name.
var errNameInUse = errors.New("upload name in use")

// hold takes the name of upload u on source for connection conn, or fails
// saying who holds it. The lease is renewed until release; if a renewal
// finds the name taken by another connection or gone (the gateway could
// not reach NATS for a whole lease), lost is called once, from another
// goroutine.
func (n *uploadNames) hold(ctx context.Context, source string, u upload, conn uint64, lost func()) (*uploadLease, error) {
	kv, err := n.setup(ctx, topology.Retry{Timeout: n.lease})
	if err != nil {
		return nil, fmt.Errorf("could not reach the %s bucket to hold the upload's name: %w; send again", topology.UploadsBucket, err)
	}
	key := source + "/" + u.name
	value, _ := json.Marshal(holder{Gateway: n.instance, Conn: conn, Since: time.Now().UTC()})
	rev, err := kv.Create(ctx, key, value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		by := "another connection"
		if e, gerr := kv.Get(ctx, key); gerr == nil {
			var h holder
			if json.Unmarshal(e.Value(), &h) == nil && h.Gateway != "" {
				by = fmt.Sprintf("gateway %s, connection %d, since %s", h.Gateway, h.Conn, h.Since.Format(time.RFC3339))
			}
		}
		return nil, fmt.Errorf("%w: upload %q on source %s is being sent by %s; wait for that upload to end or, if its gateway died, for its hold to expire (GATEWAY_UPLOAD_LEASE, %s), then send again",
			errNameInUse, u.name, source, by, n.lease)
	}
	if err != nil {
		return nil, fmt.Errorf("could not hold the upload's name in the %s bucket: %w; send again", topology.UploadsBucket, err)
	}
	l := &uploadLease{kv: kv, key: key, value: value, rev: rev, every: n.lease / 3, lost: lost,
		logger: n.logger, stop: make(chan struct{}), done: make(chan struct{})}
	go l.renew()
	return l, nil
}

// uploadLease is a held upload name; see [uploadNames].
type uploadLease struct {
	kv     jetstream.KeyValue
	key    string
	value  []byte
	every  time.Duration
	lost   func()
	logger *slog.Logger
	stop   chan struct{}
	done   chan struct{}

	rev uint64 // owned by renew until done is closed
}

// renew renews the key every l.every until release stops it or the name
// is lost.
func (l *uploadLease) renew() {
	defer close(l.done)
	t := time.NewTicker(l.every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.every)
		rev, err := l.kv.Update(ctx, l.key, l.value, l.rev)
		cancel()
		switch {
		case err == nil:
			l.rev = rev
		case wrongRevision(err):
			// A renewal whose answer was lost may have been stored: the
			// key then still holds this connection's value.
			ctx, cancel := context.WithTimeout(context.Background(), l.every)
			e, gerr := l.kv.Get(ctx, l.key)
			cancel()
			if gerr == nil && bytes.Equal(e.Value(), l.value) {
				l.rev = e.Revision()
				continue
			}
			l.logger.Error("lost the hold on the upload's name: it expired while it could not be renewed, and may be held by another connection now; ending the connection",
				"key", l.key, "err", err)
			l.rev = 0
			l.lost()
			return
		default:
			l.logger.Warn("could not renew the hold on the upload's name; trying again", "key", l.key, "err", err)
		}
	}
}

// wrongRevision reports whether err is the key-value store's refusal of an
// update whose expected revision is not the key's.
func wrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// release stops renewing and gives the name back, so the next send under
// it may start at once. A release that fails leaves the key to expire.
func (l *uploadLease) release() {
	close(l.stop)
	<-l.done
	if l.rev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev)); err != nil {
		l.logger.Warn("could not give the upload's name back; it is free again once its hold expires", "key", l.key, "err", err)
	}
}
