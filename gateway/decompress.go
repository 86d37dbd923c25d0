package gateway

import (
	"bufio"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Compression formats, as reported in [Receipt.Compression].
const (
	// CompressionNone is plain input: it starts with no known magic number.
	CompressionNone = "none"
	// CompressionGzip is gzip (RFC 1952), one member or several.
	CompressionGzip = "gzip"
	// CompressionZstd is Zstandard (RFC 8878), one frame or several.
	CompressionZstd = "zstd"
	// CompressionXz is xz, one stream or several.
	CompressionXz = "xz"
	// CompressionBzip2 is bzip2, one stream or several (pbzip2).
	CompressionBzip2 = "bzip2"
)

// sniffBuffer is the size of the buffer the first bytes are peeked in:
// enough for the longest magic number, and small, because it stays with a
// plain connection for its life (the framer's reads bypass it).
const sniffBuffer = 16

// decodeBuffer is the size of the buffer decoders read the connection
// through; they read in small pieces.
const decodeBuffer = 32 << 10

// decodeReaders recycles the buffered readers decoders read through.
var decodeReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, decodeBuffer) }}

// zstdMaxWindow caps the window a zstd stream may ask for, and so the
// memory one connection's decoder may hold. 128 MiB covers every level up
// to --ultra -22 and --long=27; streams made with a larger --long are
// refused with an error receipt.
const zstdMaxWindow = 128 << 20

// magic recognises one format's leading bytes: match reports whether b
// may be byte i of the format's first n bytes.
type magic struct {
	format string
	n      int
	match  func(b byte, i int) bool
}

// exactly matches the bytes of prefix, and also any byte alt accepts.
func exactly(prefix []byte, alt func(b byte, i int) bool) func(b byte, i int) bool {
	return func(b byte, i int) bool {
		return b == prefix[i] || alt != nil && alt(b, i)
	}
}

var magics = []magic{
	// RFC 1952: ID1, ID2 and CM=8 (deflate, the only method defined).
	{CompressionGzip, 3, exactly([]byte{0x1f, 0x8b, 0x08}, nil)},
	// RFC 8878: a frame, or a skippable frame (0x184D2A50–5F, little
	// endian) such as pzstd writes first.
	{CompressionZstd, 4, exactly([]byte{0x28, 0xb5, 0x2f, 0xfd}, nil)},
	{CompressionZstd, 4, exactly([]byte{0x50, 0x2a, 0x4d, 0x18}, func(b byte, i int) bool { return i == 0 && b&0xf0 == 0x50 })},
	// xz file format 1.0: 0xFD '7' 'z' 'X' 'Z' 0x00.
	{CompressionXz, 6, exactly([]byte{0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00}, nil)},
	// "BZh" and a block size digit are plain ASCII, so require what must
	// follow too: the first block's magic (the digits of pi) or, for an
	// empty stream, the end-of-stream magic.
	{CompressionBzip2, 10, exactly([]byte("BZh9\x31\x41\x59\x26\x53\x59"), blockSize)},
	{CompressionBzip2, 10, exactly([]byte("BZh9\x17\x72\x45\x38\x50\x90"), blockSize)},
}

// blockSize accepts bzip2's block size digit, 1–9, as the fourth byte.
func blockSize(b byte, i int) bool { return i == 3 && b >= '1' && b <= '9' }

func (m magic) matches(p []byte) bool {
	for i, b := range p[:min(len(p), m.n)] {
		if !m.match(b, i) {
			return false
		}
	}
	return true
}

// sniff returns the compression format that br's input starts with, or
// [CompressionNone]. It peeks one byte at a time, only for as long as the
// bytes seen are the start of some magic number, so a plain sender that
// sends a short line and waits is not held up, and nothing is consumed. A
// read error (including EOF) while peeking means plain: what was peeked
// stays buffered and the error comes back to the next reader.
func sniff(br *bufio.Reader) string {
	for n := 1; ; n++ {
		p, err := br.Peek(n)
		if err != nil {
			return CompressionNone
		}
		candidates := 0
		for _, m := range magics {
			if !m.matches(p) {
				continue
			}
			if n >= m.n {
				return m.format
			}
			candidates++
		}
		if candidates == 0 {
			return CompressionNone
		}
	}
}

// DecompressError is the error that ends a connection whose compressed
// stream is corrupt, truncated or larger than GATEWAY_MAX_DECOMPRESSED_BYTES
// allows. Its message is what the receipt's error says.
type DecompressError struct {
	// Format is the stream's compression, e.g. [CompressionXz].
	Format string
	// Decompressed is how many decompressed bytes were read before the
	// error.
	Decompressed int64
	// Limit is set when the stream exceeded GATEWAY_MAX_DECOMPRESSED_BYTES.
	Limit int64
	// Err is the decoder's error; nil when Limit is set.
	Err error
}

func (e *DecompressError) Error() string {
	var perr *programError
	switch {
	case e.Limit > 0:
		return fmt.Sprintf("%s: stream decompresses to more than %d bytes (GATEWAY_MAX_DECOMPRESSED_BYTES); lines up to the limit were read", e.Format, e.Limit)
	case errors.Is(e.Err, zstd.ErrWindowSizeExceeded):
		return fmt.Sprintf("%s: stream needs a window over %d MiB, more than the gateway allows per connection: compress without --long or with --long=27 at most", e.Format, zstdMaxWindow>>20)
	case errors.As(e.Err, &perr) && perr.failed:
		return fmt.Sprintf("%s: decoding failed after %d decompressed bytes: %v", e.Format, e.Decompressed, e.Err)
	case errors.Is(e.Err, io.ErrUnexpectedEOF):
		return fmt.Sprintf("%s: truncated stream after %d decompressed bytes: %v", e.Format, e.Decompressed, e.Err)
	}
	return fmt.Sprintf("%s: corrupt stream after %d decompressed bytes: %v", e.Format, e.Decompressed, e.Err)
}

func (e *DecompressError) Unwrap() error { return e.Err }

// decompressor decodes one connection's compressed stream for the framer
// and enforces the decompressed size limit. The decoder is opened on the
// first Read, so reading its header fails like any other read. Close
// releases the decoder and its buffer; a decompressor is not safe for
// concurrent use.
type decompressor struct {
	format   string
	src      *bufio.Reader
	limit    int64
	programs *decodePrograms // nil: Go decoders only
	// interrupt makes a blocked read of src return, for a decoding
	// program's Close; nil when src's reads do not block for long.
	interrupt func()

	dec   io.Reader
	close func()
	n     int64 // decompressed bytes returned
	err   error // sticky
}

// newDecompressor returns a decompressor of format reading src, which
// still holds the sniffed bytes.
func newDecompressor(format string, src io.Reader, limit int64) *decompressor {
	br := decodeReaders.Get().(*bufio.Reader)
	br.Reset(src)
	return &decompressor{format: format, src: br, limit: limit, programs: systemDecoders}
}

func (d *decompressor) open() error {
	switch d.format {
	case CompressionGzip:
		zr, err := gzip.NewReader(d.src) // multistream by default
		if err != nil {
			return err
		}
		d.dec, d.close = zr, func() { _ = zr.Close() }
	case CompressionZstd:
		// One goroutine-free decoder per connection: the connection
		// count, not the cores, is what multiplies its memory.
		zr, err := zstd.NewReader(d.src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return err
		}
		d.dec, d.close = zr, zr.Close
	case CompressionXz:
		// The system's xz when it is installed and a slot is free: twice
		// as fast, and on more than one core for xz -T archives (see
		// [systemDecoders]). Neither it nor the Go decoder caps the
		// dictionary a stream declares.
		if pd := d.programs.start(d.format, d.src, d.interrupt); pd != nil {
			d.dec, d.close = pd, pd.Close
			break
		}
		// Reads concatenated streams and padding. The library offers no
		// cap on the dictionary a stream declares (xz -9 uses 64 MiB; a
		// header may ask for up to 4 GiB), unlike zstd's window above.
		zr, err := xz.NewReader(d.src)
		if err != nil {
			return err
		}
		d.dec = zr
	case CompressionBzip2:
		d.dec = bzip2.NewReader(d.src) // reads concatenated streams (pbzip2)
	default:
		return fmt.Errorf("unknown compression %q", d.format)
	}
	return nil
}

// Read returns decompressed bytes. Errors other than io.EOF are
// [*DecompressError]s wrapping what the decoder returned, which may in turn
// be the connection's own read error (idle timeout, shutdown).
func (d *decompressor) Read(p []byte) (n int, err error) {
	// The decoders parse what any peer sends; should one panic on it,
	// that ends this connection, not every connection of the gateway.
	defer func() {
		if v := recover(); v != nil {
			n, err = 0, d.fail(fmt.Errorf("decoder panicked: %v", v))
		}
	}()
	if d.err != nil {
		return 0, d.err
	}
	if d.dec == nil {
		if err := d.open(); err != nil {
			return 0, d.fail(err)
		}
	}
	if d.n >= d.limit {
		// At the limit: fine if the stream ends exactly here.
		var one [1]byte
		k, rerr := io.ReadFull(d.dec, one[:])
		if k == 0 && errors.Is(rerr, io.EOF) {
			d.err = io.EOF
			return 0, io.EOF
		}
		if k == 0 {
			return 0, d.fail(rerr)
		}
		d.err = &DecompressError{Format: d.format, Decompressed: d.n, Limit: d.limit}
		return 0, d.err
	}
	if rem := d.limit - d.n; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err = d.dec.Read(p)
	_, program := d.dec.(*programDecoder)
	// A Go decoder returns one step's output at a time (gzip 32 KiB), and
	// the framer closes a frame where a read ends: while compressed input
	// is already buffered, decode on into p, for frames as large as the
	// input allows. The program decoder gathers its output itself.
	for err == nil && n > 0 && n < len(p) && d.src.Buffered() > 0 && !program {
		var k int
		k, err = d.dec.Read(p[n:])
		if k == 0 && err == nil {
			break
		}
		n += k
	}
	d.n += int64(n)
	if err != nil && err != io.EOF {
		return n, d.fail(err)
	}
	if err == io.EOF {
		d.err = io.EOF
	}
	return n, err
}

func (d *decompressor) fail(err error) error {
	d.err = &DecompressError{Format: d.format, Decompressed: d.n, Err: err}
	return d.err
}

// Close releases the decoder's resources. Safe to call more than once;
// Read must not be called after it.
func (d *decompressor) Close() {
	if d.close != nil {
		d.close()
		d.close = nil
	}
	if d.src != nil {
		d.src.Reset(nil)
		decodeReaders.Put(d.src)
		d.src = nil
	}
}
