package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// signalContexts returns ctx, cancelled by the first SIGINT or SIGTERM,
// which starts an orderly shutdown, and hurry, cancelled by the second, when
// the developer would rather not wait for the children to drain. release
// stops listening for signals.
func signalContexts(logger *slog.Logger) (ctx, hurry context.Context, release func()) {
	logger = logger.With(slog.String("component", "devrun"))
	ctx, cancel := context.WithCancel(context.Background())
	hurry, cancelHurry := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-sigs:
			logger.Info("received signal, stopping", slog.String("signal", sig.String()))
			cancel()
		case <-done:
			return
		}
		select {
		case sig := <-sigs:
			logger.Warn("received second signal, killing what is left", slog.String("signal", sig.String()))
			cancelHurry()
		case <-done:
		}
	}()
	return ctx, hurry, func() {
		signal.Stop(sigs)
		close(done)
		cancel()
		cancelHurry()
	}
}
