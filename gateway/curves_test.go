package gateway

import (
	"crypto/tls"
	"net"
	"slices"
	"testing"

	"github.com/jetline/jetline/shared/devkit/testcert"
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

// A Go client offers the post-quantum hybrid first; GATEWAY_TLS_CURVES
// decides whether the handshake uses it.
func TestTLSCurvesChooseKeyExchange(t *testing.T) {
	cert := testcert.NewCA(t, "ca").Issue(t, "127.0.0.1").TLS

	for _, tc := range []struct {
		curves string
		want   tls.CurveID
	}{
		{"", tls.X25519MLKEM768},
		{"X25519,P256", tls.X25519},
	} {
		curves, err := parseCurves(tc.curves)
		if err != nil {
			t.Fatal(err)
		}
		client, server := net.Pipe()
		srv := tls.Server(server, &tls.Config{Certificates: []tls.Certificate{cert}, CurvePreferences: curves})
		done := make(chan error, 1)
		go func() { done <- srv.Handshake() }()
		cl := tls.Client(client, &tls.Config{InsecureSkipVerify: true})
		if err := cl.Handshake(); err != nil {
			t.Fatalf("curves %q: client handshake: %v", tc.curves, err)
		}
		if err := <-done; err != nil {
			t.Fatalf("curves %q: server handshake: %v", tc.curves, err)
		}
		if got := srv.ConnectionState().CurveID; got != tc.want {
			t.Errorf("GATEWAY_TLS_CURVES=%q: key exchange %v, want %v", tc.curves, got, tc.want)
		}
		cl.Close()
		srv.Close()
	}
}
