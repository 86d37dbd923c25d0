package deploy

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/worker"
)

// envField is one environment variable of a program's Config.
type envField struct {
	name, def string
}

func envFields(t reflect.Type) []envField {
	var out []envField
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Tag.Get("env") == "" {
			out = append(out, envFields(f.Type)...)
			continue
		}
		if name, _, _ := strings.Cut(f.Tag.Get("env"), ","); name != "" {
			out = append(out, envField{name: name, def: f.Tag.Get("envDefault")})
		}
	}
	return out
}

// TestReadmeDocumentsEveryVariable keeps the README's configuration table
// in step with the Config structs: every variable has a row, and the row
// states the default the code uses.
func TestReadmeDocumentsEveryVariable(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	row := regexp.MustCompile("(?m)^\\| `([A-Z0-9_]+)` \\|([^|]*)\\|")
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		rows[m[1]] = strings.TrimSpace(m[2])
	}
	fields := append(envFields(reflect.TypeFor[gateway.Config]()), envFields(reflect.TypeFor[worker.Config]())...)
	for _, f := range fields {
		got, ok := rows[f.name]
		if !ok {
			t.Errorf("README has no configuration row for %s (default %q)", f.name, f.def)
			continue
		}
		want := "`" + f.def + "`"
		if f.def == "" {
			want = "—"
		}
		if got != want && !strings.HasPrefix(got, want+" ") {
			t.Errorf("README row %s says default %s, the code says %s", f.name, got, want)
		}
	}
}
