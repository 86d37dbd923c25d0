package gateway

import (
	"encoding/json"
)

// Receipt statuses.
const (
	// StatusOK means the sender's input ended and every line was stored,
	// each line too long as a dead letter.
	StatusOK = "ok"
	// StatusShutdown means the gateway stopped before it had stored the
	// whole input.
	StatusShutdown = "shutdown"
	// StatusIdleTimeout means the sender sent nothing for
	// GATEWAY_IDLE_TIMEOUT.
	StatusIdleTimeout = "idle_timeout"
	// StatusError means reading the connection failed, a compressed
	// stream was corrupt, truncated or over GATEWAY_MAX_DECOMPRESSED_BYTES,
	// or a line could not be stored.
	StatusError = "error"
)

// Receipt is the one JSON line the gateway writes back on a connection
// before closing it, e.g.
//
//	{"status":"ok","lines":100000,"bytes":61540210,"compression":"xz","bytes_decompressed":562066000,"blank":0,"too_long":1,"dead_lettered":1,"gateway":"gw1-1a2b3c4d","conn":7}
//
// and, for a named upload, with "upload":"rc-2018-01","first_line":1.
//
// Counts cover only what is durable in JetStream. Unless Status is
// [StatusOK], ResumeLine tells the sender where to start again: every line
// before it is stored (lines after it may be stored too). Line numbers
// count lines of the decompressed input.
type Receipt struct {
	// Status is [StatusOK], [StatusShutdown], [StatusIdleTimeout] or
	// [StatusError].
	Status string `json:"status"`
	// Lines is the number of lines stored in JetStream (acknowledged).
	Lines int64 `json:"lines"`
	// Bytes is the number of bytes received on the connection, compressed
	// if the input is.
	Bytes int64 `json:"bytes"`
	// Compression is the input's format, detected from its first bytes:
	// [CompressionNone], [CompressionGzip], [CompressionZstd],
	// [CompressionXz] or [CompressionBzip2].
	Compression string `json:"compression"`
	// BytesDecompressed is the number of bytes of the decompressed input
	// read into lines; for uncompressed input it is the same as Bytes once
	// the input has been read to its end.
	BytesDecompressed int64 `json:"bytes_decompressed"`
	// Blank is the number of empty lines skipped.
	Blank int64 `json:"blank"`
	// TooLong is the number of lines skipped for exceeding the maximum
	// line length.
	TooLong int64 `json:"too_long"`
	// DeadLettered is the number of those lines whose dead-letter entry
	// (reason too_long: the line's length and its first 64 KiB, or
	// GATEWAY_MAX_LINE_BYTES if that is less) is stored in the INGEST_DLQ
	// stream. It equals TooLong when Status is ok.
	DeadLettered int64 `json:"dead_lettered"`
	// ResumeLine is the 1-based line number to resend from; 0 (omitted)
	// when Status is ok.
	ResumeLine int64 `json:"resume_line,omitempty"`
	// Error says what went wrong, when Status is not ok.
	Error string `json:"error,omitempty"`
	// Gateway and Conn are the Jetline-Gateway and Jetline-Conn headers of
	// this connection's lines.
	Gateway string `json:"gateway"`
	Conn    uint64 `json:"conn"`
	// Upload and FirstLine are a named upload's name and the number of
	// its first line after the header (first_line); empty and 0
	// (omitted) for an unnamed connection. Line numbers, ResumeLine's
	// included, count from FirstLine.
	Upload    string `json:"upload,omitempty"`
	FirstLine int64  `json:"first_line,omitempty"`
}

// line returns the receipt as JSON followed by a newline.
func (r Receipt) line() []byte {
	b, err := json.Marshal(r)
	if err != nil {
		// A struct of strings and numbers always marshals.
		panic("gateway: marshal receipt: " + err.Error())
	}
	return append(b, '\n')
}
