package gateway

// OpenSessions returns how many connections g is serving, for tests that
// wait until every dialled connection has its session.
func OpenSessions(g *Gateway) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.active)
}
