package main

import "testing"

func TestGatewayAddr(t *testing.T) {
	t.Parallel()
	tests := []struct{ listen, want string }{
		{"", "127.0.0.1:4000"},
		{":4000", "127.0.0.1:4000"},
		{"0.0.0.0:4100", "127.0.0.1:4100"},
		{"[::]:4100", "127.0.0.1:4100"},
		{"10.1.2.3:4000", "10.1.2.3:4000"},
		{"tweets=:4001,logs=:4002", "127.0.0.1:4001"},
		{" live=127.0.0.2:5000 , :6000", "127.0.0.2:5000"},
	}
	for _, tt := range tests {
		if got := gatewayAddr(tt.listen); got != tt.want {
			t.Errorf("gatewayAddr(%q) = %q, want %q", tt.listen, got, tt.want)
		}
	}
}
