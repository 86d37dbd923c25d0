package gateway

import (
	"crypto/tls"
	"slices"
	"testing"
)

func TestParseCurves(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []tls.CurveID
		bad  bool
	}{
		{in: "", want: nil},
		{in: "X25519, P256", want: []tls.CurveID{tls.X25519, tls.CurveP256}},
		{in: "x25519mlkem768,P-384,p_521", want: []tls.CurveID{tls.X25519MLKEM768, tls.CurveP384, tls.CurveP521}},
		{in: "X448", bad: true},
	} {
		got, err := parseCurves(tc.in)
		if (err != nil) != tc.bad {
			t.Errorf("parseCurves(%q) error = %v, want error: %v", tc.in, err, tc.bad)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("parseCurves(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
