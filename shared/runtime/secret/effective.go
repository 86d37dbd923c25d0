package secret

import (
	"fmt"
	"log/slog"
	"reflect"
	"regexp"
	"strings"
	"time"
)

// Effective logs, at info level, one line "configuration" with every
// environment variable cfg reads and the value the program runs with, so
// an operator sees at a glance what a process was started with. cfg is a
// program's Config struct (or a pointer to one) as caarlos0/env parsed it:
// fields tagged `env:"NAME"`, nested structs without a tag walked into
// (their envPrefix honoured). The attribute keys are the variable names,
// so the line reads like the environment it came from.
//
// Secrets are hidden by three nets, so that a secret field added later is
// caught by at least one of them:
//   - a field of type [Value] (or a list of them) shows [Redacted], or ""
//     when unset;
//   - so does any field whose variable name says it holds a secret
//     (PASSWORD, TOKEN, SECRET, …), whatever its type, and one read from a
//     file with the env "file" option;
//   - every other value, strings, lists and anything printed through fmt,
//     goes through [RedactURLs], so the password of NATS_URL, DATABASE_URL
//     or any URL field shows as [Redacted].
//
// What none of them catches is a bare secret in a string field with an
// innocent name: declare such fields as [Value]. File paths (keys,
// certificates, .creds files) are shown: they say where a secret is.
func LogConfig(logger *slog.Logger, cfg any) {
	var attrs []any
	walkEnv(reflect.ValueOf(cfg), "", func(name string, f reflect.StructField, v reflect.Value) {
		attrs = append(attrs, slog.Attr{Key: name, Value: effectiveValue(f, v)})
	})
	logger.Info("configuration", attrs...)
}

// ConfigSecrets returns the secrets held in cfg, as [LogConfig] finds them
// (the values it hides), raw and percent-decoded, to [Scrub] them from
// error messages before they are printed.
func ConfigSecrets(cfg any) []string {
	var out []string
	walkEnv(reflect.ValueOf(cfg), "", func(name string, f reflect.StructField, v reflect.Value) {
		if isSecretField(name, f) {
			out = append(out, secretValues(v)...)
			return
		}
		out = append(out, URLSecrets(render(v))...)
	})
	return out
}

// secretName matches variable names that say they hold a secret.
var secretName = regexp.MustCompile(`(?i)PASSWORD|PASSWD|PASSPHRASE|TOKEN|SECRET|PRIVATE`)

var secretType = reflect.TypeFor[Value]()

// isSecretField reports whether the field named name must be hidden whole.
func isSecretField(name string, f reflect.StructField) bool {
	_, opts, _ := strings.Cut(f.Tag.Get("env"), ",")
	return holdsSecret(f.Type) || secretName.MatchString(name) || hasOption(opts, "file")
}

// holdsSecret reports whether t is a [Value] or a list or pointer of them.
func holdsSecret(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Slice, reflect.Array, reflect.Pointer:
		return holdsSecret(t.Elem())
	}
	return t == secretType
}

func hasOption(opts, want string) bool {
	for _, o := range strings.Split(opts, ",") {
		if strings.TrimSpace(o) == want {
			return true
		}
	}
	return false
}

// walkEnv calls visit for every field of the struct v (or *v) that names an
// environment variable, depth first, in declaration order.
func walkEnv(v reflect.Value, prefix string, visit func(name string, f reflect.StructField, v reflect.Value)) {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return
	}
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		switch {
		case name == "-":
		case name != "":
			visit(prefix+name, f, v.Field(i))
		default:
			walkEnv(v.Field(i), prefix+f.Tag.Get("envPrefix"), visit)
		}
	}
}

// effectiveValue is how [LogConfig] shows field f holding v.
func effectiveValue(f reflect.StructField, v reflect.Value) slog.Value {
	name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	if isSecretField(name, f) {
		if v.IsZero() {
			return slog.StringValue("")
		}
		return slog.StringValue(Redacted)
	}
	switch x := plain(v).(type) {
	case time.Duration:
		return slog.DurationValue(x)
	case bool:
		return slog.BoolValue(x)
	case fmt.Stringer: // slog.Level and the like read better by name
		return slog.StringValue(RedactURLs(x.String()))
	}
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return slog.Int64Value(v.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return slog.Uint64Value(v.Uint())
	case reflect.Float32, reflect.Float64:
		return slog.Float64Value(v.Float())
	}
	return slog.StringValue(RedactURLs(render(v)))
}

// render writes v as the environment would spell it: lists
// comma-separated, everything else as fmt prints it.
func render(v reflect.Value) string {
	switch {
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() != reflect.Uint8:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = render(v.Index(i))
		}
		return strings.Join(parts, ",")
	case v.Kind() == reflect.String:
		return v.String()
	}
	return fmt.Sprint(plain(v))
}

// secretValues returns the non-empty values in v, a secret field.
func secretValues(v reflect.Value) []string {
	switch v.Kind() {
	case reflect.Slice, reflect.Array:
		var out []string
		for i := range v.Len() {
			out = append(out, secretValues(v.Index(i))...)
		}
		return out
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		return secretValues(v.Elem())
	case reflect.String:
		// The underlying string: fmt would print a Value as xxxxx.
		if v.String() == "" {
			return nil
		}
		return []string{v.String()}
	}
	if s := fmt.Sprint(plain(v)); s != "" {
		return []string{s}
	}
	return nil
}

// plain returns v's value, or nil for an unexported one.
func plain(v reflect.Value) any {
	if !v.CanInterface() {
		return nil
	}
	return v.Interface()
}
