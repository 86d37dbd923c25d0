package main

import (
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
)

func TestConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string // "" means valid
		check   func(t *testing.T, c Config)
	}{
		{
			name: "defaults",
			check: func(t *testing.T, c Config) {
				if c.DataDir != ".data" || c.GatewayBin != ".data/bin/gateway" || c.WorkerBin != ".data/bin/worker" ||
					c.Workers != 2 || c.NATSPort != 4222 || c.PostgresPort != 5433 || c.HealthPort != 8080 ||
					c.StopTimeout != 45*time.Second || c.NATSURL != "" || c.DatabaseURL != "" ||
					c.RestartIntensity != 5 || c.RestartPeriod != 30*time.Second {
					t.Errorf("unexpected defaults: %+v", c)
				}
			},
		},
		{
			name: "external servers",
			env:  map[string]string{"NATS_URL": "nats://n:4222", "DATABASE_URL": "postgres://db/x"},
			check: func(t *testing.T, c Config) {
				if c.NATSURL != "nats://n:4222" || c.DatabaseURL != "postgres://db/x" {
					t.Errorf("external URLs not read: %+v", c)
				}
			},
		},
		{name: "no workers", env: map[string]string{"JETLINE_WORKERS": "0"}, wantErr: "JETLINE_WORKERS must be between 1 and 32"},
		{name: "bad port", env: map[string]string{"JETLINE_POSTGRES_PORT": "70000"}, wantErr: "JETLINE_POSTGRES_PORT must be a TCP port"},
		{name: "negative stop timeout", env: map[string]string{"JETLINE_STOP_TIMEOUT": "-1s"}, wantErr: "JETLINE_STOP_TIMEOUT must be positive"},
		{name: "negative restart intensity", env: map[string]string{"JETLINE_RESTART_INTENSITY": "-1"}, wantErr: "JETLINE_RESTART_INTENSITY must be 0 or more"},
		{name: "zero restart period", env: map[string]string{"JETLINE_RESTART_PERIOD": "0s"}, wantErr: "JETLINE_RESTART_PERIOD must be positive"},
		{name: "bad log format", env: map[string]string{"LOG_FORMAT": "xml"}, wantErr: "LOG_FORMAT must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var c Config
			if err := env.ParseWithOptions(&c, env.Options{Environment: tt.env}); err != nil {
				t.Fatal(err)
			}
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}
