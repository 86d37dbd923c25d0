package gateway_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/devkit/testcert"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// tlsSetup is a gateway with one TLS listener (and no plain one) and the
// authority that signed its certificate.
type tlsSetup struct {
	*bundle
	ca *testcert.CA
}

func setupTLS(t *testing.T, environ map[string]string) tlsSetup {
	t.Helper()
	ca := testcert.NewCA(t, "server-ca")
	server := ca.Issue(t, "127.0.0.1") // ncat checks the common name, not IP addresses
	e := map[string]string{
		"GATEWAY_LISTEN":     "off",
		"GATEWAY_TLS_LISTEN": "127.0.0.1:0",
		"GATEWAY_TLS_CERT":   server.CertFile,
		"GATEWAY_TLS_KEY":    server.KeyFile,
	}
	for k, v := range environ {
		e[k] = v
	}
	return tlsSetup{bundle: setup(t, setupOptions{env: e}), ca: ca}
}

// sendTLS sends data over TLS, presenting client if it is not nil, and
// returns the receipt or the error that prevented reading it.
func (s tlsSetup) sendTLS(t *testing.T, client *testcert.Pair, data []byte) (gateway.Receipt, error) {
	t.Helper()
	cfg := &tls.Config{RootCAs: s.ca.Pool(), MinVersion: tls.VersionTLS12}
	if client != nil {
		cfg.Certificates = []tls.Certificate{client.TLS}
	}
	d := tls.Dialer{Config: cfg}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", s.addr(t, 0))
	if err != nil {
		return gateway.Receipt{}, err
	}
	defer conn.Close()
	c := conn.(*tls.Conn)
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	// Under TLS 1.3 the client finishes its handshake before the server
	// has checked its certificate; a refusal shows on the first read.
	if _, err := c.Write(data); err != nil {
		return gateway.Receipt{}, err
	}
	if err := c.CloseWrite(); err != nil {
		return gateway.Receipt{}, err
	}
	line, err := io.ReadAll(c)
	if err != nil {
		return gateway.Receipt{}, err
	}
	var r gateway.Receipt
	if err := json.Unmarshal(line, &r); err != nil {
		return gateway.Receipt{}, errors.New("no receipt: " + string(line))
	}
	return r, nil
}

func TestGatewayTLS(t *testing.T) {
	t.Parallel()
	s := setupTLS(t, nil)
	input := []byte("{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n")
	r, err := s.sendTLS(t, nil, input)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != gateway.StatusOK || r.Lines != 3 || r.Bytes != int64(len(input)) {
		t.Fatalf("receipt = %+v, want ok with 3 lines", r)
	}
	var got []string
	for _, l := range s.storedLines(t) {
		got = append(got, l.data)
	}
	if want := `{"a":1},{"b":2},{"c":3}`; strings.Join(got, ",") != want {
		t.Fatalf("stored %v, want %s", got, want)
	}
	if n := s.gw.Refused()[gateway.RefusedTLSHandshake]; n != 0 {
		t.Fatalf("%d handshakes refused, want 0", n)
	}
}

func TestGatewayMutualTLS(t *testing.T) {
	t.Parallel()
	clientCA := testcert.NewCA(t, "client-ca")
	s := setupTLS(t, map[string]string{"GATEWAY_TLS_CLIENT_CA": clientCA.File})
	good := clientCA.Issue(t, "sender")
	stranger := testcert.NewCA(t, "other-ca").Issue(t, "stranger")

	r, err := s.sendTLS(t, &good, []byte("{\"signed\":true}\n"))
	if err != nil {
		t.Fatalf("client with a certificate of GATEWAY_TLS_CLIENT_CA: %v", err)
	}
	if r.Status != gateway.StatusOK || r.Lines != 1 {
		t.Fatalf("receipt = %+v, want ok with 1 line", r)
	}

	for i, client := range []*testcert.Pair{nil, &stranger} {
		if r, err := s.sendTLS(t, client, []byte("{\"signed\":false}\n")); err == nil {
			t.Errorf("client %d (without a certificate, then with one of another CA) got a receipt: %+v", i, r)
		}
		testenv.Eventually(t, 10*time.Second, "the refusal to be counted", func() error {
			if got := s.gw.Refused()[gateway.RefusedTLSHandshake]; got != uint64(i+1) {
				return fmt.Errorf("%v, want %v", got, uint64(i+1))
			}
			return nil
		})
	}
	if n := s.msgCount(t); n != 1 {
		t.Fatalf("stream holds %d lines, want only the signed one", n)
	}
}

// A client that does not speak TLS is closed after the handshake timeout
// if it says nothing, and at once if it sends plain lines.
func TestGatewayTLSRefusesPlainClients(t *testing.T) {
	t.Parallel()
	s := setupTLS(t, map[string]string{"GATEWAY_TLS_HANDSHAKE_TIMEOUT": "300ms"})

	silent := dial(t, s.addr(t, 0))
	_ = silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := silent.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Fatalf("silent client read = %d, %v; want the connection closed", n, err)
	}
	testenv.Eventually(t, 10*time.Second, "the silent client to be counted", func() error {
		if got := s.gw.Refused()[gateway.RefusedTLSHandshake]; got != 1 {
			return fmt.Errorf("%v, want %v", got, 1)
		}
		return nil
	})

	plain := dial(t, s.addr(t, 0))
	if _, err := plain.Write([]byte("{\"plain\":1}\n")); err != nil {
		t.Fatal(err)
	}
	_ = plain.CloseWrite()
	_ = plain.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(plain)
	if bytes.Contains(b, []byte(`"status"`)) || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("plain client read %q, %v; want the connection closed without a receipt", b, err)
	}
	testenv.Eventually(t, 10*time.Second, "the plain client to be counted", func() error {
		if got := s.gw.Refused()[gateway.RefusedTLSHandshake]; got != 2 {
			return fmt.Errorf("%v, want %v", got, 2)
		}
		return nil
	})
	if n := s.msgCount(t); n != 0 {
		t.Fatalf("stream holds %d lines, want 0", n)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// ncatReceipt runs `ncat args... HOST PORT < file` and parses the receipt
// it prints.
func ncatReceipt(t *testing.T, addr string, data []byte, args ...string) gateway.Receipt {
	t.Helper()
	ncat := testenv.Ncat(t)
	file := filepath.Join(t.TempDir(), "input")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ncat, append(args, host, port)...)
	cmd.Stdin = in
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ncat %s: %v\nstdout: %q\nstderr: %s", strings.Join(cmd.Args[1:], " "), err, stdout.Bytes(), stderr.Bytes())
	}
	var r gateway.Receipt
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("ncat printed %q: %v", stdout.Bytes(), err)
	}
	return r
}

func TestGatewayTLSWithNcat(t *testing.T) {
	t.Parallel()
	clientCA := testcert.NewCA(t, "client-ca")
	s := setupTLS(t, map[string]string{"GATEWAY_TLS_CLIENT_CA": clientCA.File})
	client := clientCA.Issue(t, "ncat")
	input := []byte("{\"n\":1}\n{\"n\":2}\n")
	r := ncatReceipt(t, s.addr(t, 0), input, "--ssl", "--ssl-verify", "--ssl-trustfile", s.ca.File,
		"--ssl-cert", client.CertFile, "--ssl-key", client.KeyFile)
	if r.Status != gateway.StatusOK || r.Lines != 2 {
		t.Fatalf("receipt = %+v, want ok with 2 lines", r)
	}
}

// The idle timeout holds on TLS connections too, and the receipt still
// reaches the sender after the timed-out read.
func TestGatewayTLSIdleTimeout(t *testing.T) {
	t.Parallel()
	s := setupTLS(t, map[string]string{"GATEWAY_IDLE_TIMEOUT": "300ms"})
	c, err := tls.Dial("tcp", s.addr(t, 0), &tls.Config{RootCAs: s.ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("one\ntwo\npartial")); err != nil {
		t.Fatal(err)
	}
	r := readReceipt(t, c, 10*time.Second)
	if r.Status != gateway.StatusIdleTimeout || r.Lines != 2 || r.ResumeLine != 3 {
		t.Fatalf("receipt = %+v, want idle_timeout with 2 lines, resume at 3", r)
	}
}

func TestGatewayTLSRefusesOldVersions(t *testing.T) {
	t.Parallel()
	s := setupTLS(t, nil)
	c, err := tls.Dial("tcp", s.addr(t, 0), &tls.Config{RootCAs: s.ca.Pool(), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		c.Close()
		t.Fatalf("a TLS 1.1 client completed its handshake; want TLS 1.2 at least")
	}
	testenv.Eventually(t, 10*time.Second, "the refusal to be counted", func() error {
		if got := s.gw.Refused()[gateway.RefusedTLSHandshake]; got != 1 {
			return fmt.Errorf("%v, want %v", got, 1)
		}
		return nil
	})
}

// A Go client offers the post-quantum hybrid first; GATEWAY_TLS_CURVES, read
// by a gateway from its environment, decides whether the handshake uses it.
func TestTLSCurvesChooseKeyExchange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		curves string
		want   tls.CurveID
	}{
		{"", tls.X25519MLKEM768},
		{"X25519,P256", tls.X25519},
		{"P384", tls.CurveP384},
	} {
		t.Run(tc.curves, func(t *testing.T) {
			t.Parallel()
			s := setupTLS(t, map[string]string{"GATEWAY_TLS_CURVES": tc.curves})
			d := tls.Dialer{Config: &tls.Config{RootCAs: s.ca.Pool(), MinVersion: tls.VersionTLS12}}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			conn, err := d.DialContext(ctx, "tcp", s.addr(t, 0))
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer conn.Close()
			if got := conn.(*tls.Conn).ConnectionState().CurveID; got != tc.want {
				t.Errorf("GATEWAY_TLS_CURVES=%q: key exchange %v, want %v", tc.curves, got, tc.want)
			}
		})
	}
}
