package gateway

import (
	"bufio"
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
