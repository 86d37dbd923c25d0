package secret

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestRedactURLs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
		secrets  []string // must be gone, and reported by URLSecrets
	}{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222", nil},
		{"nats://user:s3cret@a:4222, nats://tok3n@b:4222,nats://c:4222",
			"nats://user:xxxxx@a:4222, nats://xxxxx@b:4222,nats://c:4222", []string{"s3cret", "tok3n"}},
		{"tls://jet:p%40ss@nats.example.com:4222", "tls://jet:xxxxx@nats.example.com:4222", []string{"p%40ss", "p@ss"}},
		// Does not parse (port), still redacted: such strings reach error messages.
		{"nats://jet:s3cret@host:notaport", "nats://jet:xxxxx@host:notaport", []string{"s3cret"}},
		// Unescaped '/', '@' and ',' in a password.
		{"nats://jet:a/b@c,d@host:4222", "nats://jet:xxxxx@host:4222", []string{"a/b@c,d"}},
		// A PostgreSQL user name is not a secret; its password and query passwords are.
		{"postgres://postgres@127.0.0.1:5433/jetline?sslmode=disable", "postgres://postgres@127.0.0.1:5433/jetline?sslmode=disable", nil},
		{"postgres://jet:pgpw@db:5432/jetline?sslmode=verify-full&sslrootcert=/etc/ca.pem",
			"postgres://jet:xxxxx@db:5432/jetline?sslmode=verify-full&sslrootcert=/etc/ca.pem", []string{"pgpw"}},
		{"postgresql://jet@h1:5432,h2:5432/db?password=qpw&sslpassword=kpw",
			"postgresql://jet@h1:5432,h2:5432/db?password=xxxxx&sslpassword=xxxxx", []string{"qpw", "kpw"}},
		// Keyword/value connection strings.
		{"host=db user=jet password=kvpw dbname=jetline", "host=db user=jet password=xxxxx dbname=jetline", []string{"kvpw"}},
		{`host=db password='with space \' quote' port=5432`, "host=db password=xxxxx port=5432", []string{"with space"}},
		// Not URLs at all.
		{":4000,tweets=:4001", ":4000,tweets=:4001", nil},
		{"deploy/pipelines/tweets.yaml", "deploy/pipelines/tweets.yaml", nil},
	}
	for _, tt := range tests {
		got := RedactURLs(tt.in)
		if got != tt.want {
			t.Errorf("RedactURLs(%q)\n got %q\nwant %q", tt.in, got, tt.want)
		}
		found := URLSecrets(tt.in)
		for _, s := range tt.secrets {
			if strings.Contains(got, s) {
				t.Errorf("RedactURLs(%q) = %q still holds %q", tt.in, got, s)
			}
			if !slices.ContainsFunc(found, func(f string) bool { return strings.Contains(f, s) }) {
				t.Errorf("URLSecrets(%q) = %q misses %q", tt.in, found, s)
			}
		}
		if tt.secrets == nil && len(found) != 0 {
			t.Errorf("URLSecrets(%q) = %q, want none", tt.in, found)
		}
	}
}

// TestScrubPgxErrors checks what pgx's own messages make of a password in
// a connection string that does not parse, and that Scrub hides it where
// pgx does not.
func TestScrubPgxErrors(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{
		"postgres://jet:pgx-pw-1@127.0.0.1:notaport/jetline",
		"postgres://jet:pgx-pw-2@[::1/jetline",
		"postgres://jet:pgx pw 3@db/jetline?sslmode=bogus",
		"host=db password=pgx-pw-4 port=notaport",
		"host=db password='pgx pw 5' sslmode=bogus",
		"postgres://jet:pgx-pw-6@db/jetline?connect_timeout=notanumber",
	} {
		_, err := pgconn.ParseConfig(dsn)
		if err == nil {
			t.Fatalf("ParseConfig(%q) did not fail", dsn)
		}
		secrets := URLSecrets(dsn)
		if len(secrets) == 0 {
			t.Fatalf("URLSecrets(%q) found nothing", dsn)
		}
		scrubbed := Scrub(fmt.Errorf("parse DATABASE_URL: %w", err), secrets...)
		for _, s := range secrets {
			if strings.Contains(scrubbed.Error(), s) {
				t.Errorf("scrubbed error for %q still holds %q: %v", dsn, s, scrubbed)
			}
		}
		var pe *pgconn.ParseConfigError
		if !errors.As(scrubbed, &pe) {
			t.Errorf("Scrub lost the error chain of %v", err)
		}
	}
}

func TestScrub(t *testing.T) {
	t.Parallel()
	if Scrub(nil, "x") != nil {
		t.Fatal("Scrub(nil) != nil")
	}
	plain := errors.New("nothing to hide")
	if Scrub(plain, "s3cret") != plain {
		t.Fatal("Scrub wrapped an error without secrets")
	}
	_, perr := url.Parse("nats://jet:s3cret-longer@host:notaport")
	err := Scrub(fmt.Errorf("connect: %w", fs.ErrNotExist), "s3cret")
	if err.Error() != "connect: file does not exist" {
		t.Fatalf("Scrub changed %q", err)
	}
	err = Scrub(fmt.Errorf("connect: %w", perr), "s3cret", "s3cret-longer", "")
	if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "-longer") {
		t.Fatalf("Scrub left a secret: %v", err)
	}
	var ue *url.Error
	if !errors.As(err, &ue) {
		t.Fatalf("Scrub lost the error chain: %v", err)
	}
}

func TestSecretPrints(t *testing.T) {
	t.Parallel()
	s := Value("tok3n")
	for _, got := range []string{
		fmt.Sprint(s), fmt.Sprintf("%v %s %q %x %#v %+v", s, s, s, s, s, struct{ T Value }{s}),
		s.LogValue().String(),
	} {
		if strings.Contains(got, "tok3n") || !strings.Contains(got, Redacted) {
			t.Errorf("a Value printed as %q", got)
		}
	}
	if b, _ := s.MarshalText(); string(b) != Redacted {
		t.Errorf("MarshalText = %q", b)
	}
	if s.Reveal() != "tok3n" || Value("").String() != "" {
		t.Error("Reveal or empty String wrong")
	}
}
