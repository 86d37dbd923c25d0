package secret

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// RedactURLs returns s with every credential in it replaced by [Redacted],
// for logs and error messages. s is a URL, a comma-separated list of them
// (NATS_URL) or a PostgreSQL keyword/value connection string. Hidden are:
// the password of a URL; the bare user of a NATS URL (nats://TOKEN@host),
// which NATS takes for a token; password, sslpassword and token query
// parameters; and password=… in a keyword/value string. A PostgreSQL user
// name stays visible. Strings without credentials come back unchanged.
//
// It does not need s to parse: the strings that end up in error messages
// are often the ones that did not. When the boundaries of malformed input
// are unclear it hides too much rather than too little.
func RedactURLs(s string) string {
	out, _ := redactURLs(s)
	return out
}

// URLSecrets returns the credentials [RedactURLs] would hide in s, raw and
// percent-decoded, so that an error message quoting them can be scrubbed
// (see [Scrub]).
func URLSecrets(s string) []string {
	_, secrets := redactURLs(s)
	return secrets
}

// redactURLs does [RedactURLs] and returns what it hid.
func redactURLs(s string) (string, []string) {
	var secrets []string
	hide := func(v string) string {
		if v != "" {
			secrets = append(secrets, v)
			if d, err := url.PathUnescape(v); err == nil && d != v {
				secrets = append(secrets, d)
			}
		}
		return Redacted
	}
	if !strings.Contains(s, "://") {
		return redactKeywords(s, hide), secrets
	}
	parts := splitURLs(s)
	for i, p := range parts {
		parts[i] = redactURL(p, hide)
	}
	return strings.Join(parts, ","), secrets
}

// splitURLs splits a comma-separated list of URLs. A piece without "://"
// stays with the one before it: it is a second host of a PostgreSQL URL
// (postgres://u:p@h1,h2/db) or part of a password with a comma in it, and
// cutting there could leave half a password outside the userinfo.
func splitURLs(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if len(out) > 0 && !strings.Contains(p, "://") {
			out[len(out)-1] += "," + p
			continue
		}
		out = append(out, p)
	}
	return out
}

// redactURL hides the credentials of one URL, passing each to hide, which
// returns what to write instead.
func redactURL(u string, hide func(string) string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	// The userinfo ends at the last '@' before the query: a password may
	// hold an unescaped '/' or '@', and a path or host seldom holds an '@'.
	query := len(rest)
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		query = i
	}
	if at := strings.LastIndex(rest[:query], "@"); at >= 0 {
		user, pass, hasPass := strings.Cut(rest[:at], ":")
		switch {
		case hasPass:
			user += ":" + hide(pass)
		case isNATSScheme(scheme):
			user = hide(user)
		}
		rest = user + rest[at:]
	}
	return scheme + "://" + redactQuery(rest, hide)
}

// isNATSScheme reports whether scheme is one of the NATS client's, whose
// bare URL user is a token.
func isNATSScheme(scheme string) bool {
	switch strings.ToLower(strings.TrimSpace(scheme)) {
	case "nats", "tls", "ws", "wss":
		return true
	}
	return false
}

// secretParam matches a query parameter that carries a credential.
var secretParam = regexp.MustCompile(`(?i)([?&](?:password|sslpassword|token)=)([^&#]*)`)

func redactQuery(s string, hide func(string) string) string {
	return secretParam.ReplaceAllStringFunc(s, func(m string) string {
		sub := secretParam.FindStringSubmatch(m)
		return sub[1] + hide(sub[2])
	})
}

// secretKeyword matches password=… in a keyword/value connection string,
// quoted ('with \' escape') or not.
var secretKeyword = regexp.MustCompile(`(?i)(\b(?:password|sslpassword)\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s]*)`)

func redactKeywords(s string, hide func(string) string) string {
	return secretKeyword.ReplaceAllStringFunc(s, func(m string) string {
		sub := secretKeyword.FindStringSubmatch(m)
		v := sub[2]
		if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
			hide(v[1 : len(v)-1])
		}
		return sub[1] + hide(v)
	})
}

// Scrub returns err with every one of secrets replaced by [Redacted] in its
// message, for errors that may quote a connection string (url.Parse and
// some driver errors do). errors.Is and errors.As still reach the errors it
// wraps; their own messages are not scrubbed. It returns nil for nil, and
// err itself when its message holds none of secrets.
func Scrub(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := scrubString(msg, secrets)
	if clean == msg {
		return err
	}
	return &scrubbedError{msg: clean, err: err}
}

// scrubString replaces every non-empty secret in s by [Redacted], longest
// first so that a secret containing another is hidden whole.
func scrubString(s string, secrets []string) string {
	sorted := make([]string, 0, len(secrets))
	for _, v := range secrets {
		if v != "" && v != Redacted {
			sorted = append(sorted, v)
		}
	}
	slices.SortFunc(sorted, func(a, b string) int { return len(b) - len(a) })
	for _, v := range sorted {
		s = strings.ReplaceAll(s, v, Redacted)
	}
	return s
}

// scrubbedError is an error whose message had secrets taken out.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }
