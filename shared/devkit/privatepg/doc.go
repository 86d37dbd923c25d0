// Package privatepg runs a private PostgreSQL 15 server as a child process,
// for integration tests and for the dev runner behind `make run`.
//
// The server listens on TCP only (no unix socket), trusts every local
// connection and keeps its data in a directory the caller chooses; a
// directory that already holds a cluster is reused, so the dev runner's
// data survives restarts. Postgres writes its log to Dir + ".log", the
// sibling of the data directory (".data/postgres.log" for the dev runner);
// [Server.LogPath] returns it.
//
// initdb and postgres refuse to run as root. When the calling process is
// root, both run as the unprivileged OS user "jetline" (created with useradd
// when missing, falling back to "postgres" and then "nobody"), the data
// directory is handed to that user, and every directory above it must be
// searchable by that user.
package privatepg
