package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/jetline/jetline/shared/runtime/secret"
)

// printBanner tells the developer where everything runs, how to send data
// and how to look at the result.
func (r *runner) printBanner(natsURL, dbURL string) {
	gw := gatewayAddr(os.Getenv("GATEWAY_LISTEN"))
	host, port, _ := net.SplitHostPort(gw)
	table := os.Getenv("WORKER_TABLE")
	if table == "" {
		table = "events"
	}

	natsArg, natsNote := natsURL, "embedded, store "+filepath.Join(r.cfg.DataDir, "nats")
	if r.cfg.natsCluster() {
		natsNote = fmt.Sprintf("embedded cluster, children nats-1 … nats-%d, stores %s", r.cfg.NATSNodes, filepath.Join(r.cfg.DataDir, "nats", "jetline-<n>"))
	}
	if r.cfg.NATSURL != "" {
		natsArg, natsNote = `"$NATS_URL"`, "external, from NATS_URL"
	}
	dbArg, dbNote := "'"+dbURL+"'", fmt.Sprintf("private, data %s, log %s.log",
		filepath.Join(r.cfg.DataDir, "postgres"), filepath.Join(r.cfg.DataDir, "postgres"))
	dbShown := dbURL
	if r.cfg.DatabaseURL != "" {
		dbArg, dbNote, dbShown = `"$DATABASE_URL"`, "external", "$DATABASE_URL"
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\njetline is running\n\n")
	fmt.Fprintf(&b, "  gateway   tcp://%s   health http://127.0.0.1:%d/readyz\n", gw, r.cfg.HealthPort)
	fmt.Fprintf(&b, "  workers   %d, health on ports %d-%d\n", r.cfg.Workers, r.cfg.HealthPort+1, r.cfg.HealthPort+r.cfg.Workers)
	fmt.Fprintf(&b, "  nats      %s   (%s)\n", secret.RedactURLs(natsURL), natsNote)
	fmt.Fprintf(&b, "  postgres  %s   (%s)\n", dbShown, dbNote)
	fmt.Fprintf(&b, "  logs      %s/<name>.log   (a child that exits is restarted; more than %d restarts in %s stop everything)\n",
		filepath.Join(r.cfg.DataDir, "logs"), r.cfg.RestartIntensity, r.cfg.RestartPeriod)
	fmt.Fprintf(&b, "\nSend newline-delimited JSON (the gateway answers with a receipt at the end):\n\n")
	fmt.Fprintf(&b, "  ncat %s %s < file.ndjson\n", host, port)
	fmt.Fprintf(&b, "  xz -dc dump.xz | ncat %s %s\n", host, port)
	if _, ok := demoPipeline(); ok {
		fmt.Fprintf(&b, "\nTweets on port 4001 go through %s into table tweets:\n\n", demoSpec)
		fmt.Fprintf(&b, "  ncat %s 4001 < %s\n", host, demoSample)
		fmt.Fprintf(&b, "  psql %s -c 'select id, author, lang, text from tweets limit 5'\n", dbArg)
		fmt.Fprintf(&b, "\nA live feed on port 4002 goes through %s into tables live.tweets, live.users,\nlive.tweet_hashtags and live.tweet_mentions (delete notices leave tombstones in live.tweets_tombstones):\n\n", demoFullSpec)
		fmt.Fprintf(&b, "  ncat %s 4002 < %s\n", host, demoFullSample)
		fmt.Fprintf(&b, "  psql %s -c 'select u.screen_name, u.followers, h.tag, t.text from live.tweets t join live.users u on u.id = t.user_id join live.tweet_hashtags h on h.tweet_id = t.id'\n", dbArg)
	}
	fmt.Fprintf(&b, "\nLook at it:\n\n")
	fmt.Fprintf(&b, "  psql %s -c 'select count(*) from %s'\n", dbArg, table)
	fmt.Fprintf(&b, "  nats --server %s stream info INGEST\n", natsArg)
	fmt.Fprintf(&b, "\nPress Ctrl-C to stop.\n\n")
	fmt.Fprint(r.banner, b.String())
}

// gatewayAddr returns the address a sender on this machine should connect
// to: the first entry of GATEWAY_LISTEN ("[source=]addr", comma-separated),
// with an unspecified host replaced by 127.0.0.1. Empty means the gateway's
// default, :4000.
func gatewayAddr(listen string) string {
	first, _, _ := strings.Cut(listen, ",")
	first = strings.TrimSpace(first)
	if i := strings.IndexByte(first, '='); i >= 0 {
		first = first[i+1:]
	}
	if first == "" {
		first = ":4000"
	}
	host, port, err := net.SplitHostPort(first)
	if err != nil {
		return first
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
