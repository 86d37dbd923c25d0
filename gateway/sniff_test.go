package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestSniff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		input string
		want  string
	}{
		{"", CompressionNone},
		{"{\"a\":1}\n", CompressionNone},
		{"\x1f\x8b\x08\x00", CompressionGzip},
		{"\x1f\x8b\x07\x00", CompressionNone}, // not deflate
		{"\x1f\x8b", CompressionNone},         // too short
		{"\x28\xb5\x2f\xfd\x00", CompressionZstd},
		{"\x28\xb5\x2f\xfe\x00", CompressionNone},
		{"\x5e\x2a\x4d\x18\x00", CompressionZstd}, // skippable frame
		{"\x60\x2a\x4d\x18\x00", CompressionNone},
		{"\xfd7zXZ\x00\x00", CompressionXz},
		{"\xfd7zXZ", CompressionNone},
		{"\xfd7zXY\x00", CompressionNone},
		{"BZh91AY&SY\x00", CompressionBzip2},
		{"BZh1\x17\x72\x45\x38\x50\x90", CompressionBzip2}, // empty stream
		{"BZh0" + "1AY&SY", CompressionNone},               // no such block size
		{"BZh91AY&SX", CompressionNone},
		{"BZh9 is not bzip2\n", CompressionNone},
		{"BZh\n", CompressionNone},
		{"B", CompressionNone},
	}
	for _, tt := range tests {
		br := bufio.NewReaderSize(strings.NewReader(tt.input), 16)
		if got := sniff(br); got != tt.want {
			t.Errorf("sniff(%q) = %s, want %s", tt.input, got, tt.want)
		}
		// Nothing is consumed.
		if rest, err := io.ReadAll(br); err != nil || string(rest) != tt.input {
			t.Errorf("after sniff(%q) the reader holds %q, %v", tt.input, rest, err)
		}
	}
}

// A plain sender that sends a short line and waits is not held up: sniff
// decides as soon as the bytes stop looking like a magic number.
func TestSniffDoesNotWaitForMore(t *testing.T) {
	t.Parallel()
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = pw.Write([]byte("BZh9\n")) }()
	if got := sniff(bufio.NewReader(pr)); got != CompressionNone {
		t.Fatalf("sniff = %s, want none", got)
	}
}

// FuzzDecompress feeds arbitrary bytes, most of them starting with a magic
// number, through sniffing and decoding: every input ends with EOF or a
// [*DecompressError], never a panic, and never more than the limit.
func FuzzDecompress(f *testing.F) {
	for _, seed := range []string{
		"plain\n",
		"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\xca\x48\xcd\xc9\xc9\xe7\x02\x04\x00\x00\xff\xff\x56\x2e\xa5\xa0\x06\x00\x00\x00",
		"\x28\xb5\x2f\xfd\x04\x58\x31\x00\x00\x68\x65\x6c\x6c\x6f\x0a",
		"\xfd7zXZ\x00\x00\x04\xe6\xd6\xb4\x46\x02\x00\x21\x01\x16\x00\x00\x00\x74\x2f\xe5\xa3\x01\x00\x05hello\n",
		"BZh91AY&SY\x00\x00\x00\x00\x00\x00",
		"BZh9\x17\x72\x45\x38\x50\x90\x00\x00\x00\x00",
	} {
		f.Add([]byte(seed))
	}
	const limit = 1 << 20
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), 64)
		format := sniff(br)
		if format == CompressionNone {
			return
		}
		d := newDecompressor(format, br, limit)
		defer d.Close()
		n, err := io.Copy(io.Discard, d)
		var derr *DecompressError
		switch {
		case n > limit:
			t.Fatalf("%s: decompressed %d bytes, over the limit of %d", format, n, limit)
		case err != nil && !errors.As(err, &derr):
			t.Fatalf("%s: error %v (%T), want a *DecompressError", format, err, err)
		case derr != nil && strings.Contains(derr.Error(), "decoder panicked"):
			t.Fatalf("%s: %v", format, derr)
		}
	})
}
