package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetline/jetline/shared/contract/topology"
)

// Route is where the lines of a source go: a [Transform] turns them into
// rows of its tables and a [Store] writes those rows. The store must write
// to the transform's tables.
type Route struct {
	Transform Transform
	Store     Store
}

// Router maps each source to its [Route]; sources without a route of their
// own take the default route (the raw landing). A batch of mixed sources is
// split by route, and each route's rows are written by its store in a
// transaction of their own.
//
// Build a Router with [NewRouter] and [Router.Handle] before passing it to
// [New]; it must not be changed afterwards. It is then safe for
// concurrent use.
type Router struct {
	routes   []Route
	bySource map[string]int
	sources  []string
	// detailed is set when a route does more than insert one row into
	// one table per line: the progress log then counts rows by table.
	detailed bool
}

// NewRouter returns a router sending every source to def.
func NewRouter(def Route) (*Router, error) {
	r := &Router{bySource: map[string]int{}}
	if err := r.add(def); err != nil {
		return nil, fmt.Errorf("default route: %w", err)
	}
	return r, nil
}

// Handle sends the lines of source to route. Each source has at most one
// route, and no two routes may write the same table: the tables' keys
// would not tell their rows apart.
func (r *Router) Handle(source string, route Route) error {
	if err := topology.ValidateSource(source); err != nil {
		return err
	}
	if _, ok := r.bySource[source]; ok {
		return fmt.Errorf("source %q has two routes; give each source one pipeline", source)
	}
	if err := r.add(route); err != nil {
		return fmt.Errorf("route of source %q: %w", source, err)
	}
	r.bySource[source] = len(r.routes) - 1
	r.sources = append(r.sources, source)
	return nil
}

func (r *Router) add(route Route) error {
	if route.Transform == nil || route.Store == nil {
		return errors.New("a route needs a transform and a store")
	}
	tables := route.Transform.Tables()
	if len(tables) == 0 {
		return errors.New("a route's transform has no table")
	}
	for _, table := range tables {
		if err := table.Validate(); err != nil {
			return err
		}
		if table.Delete {
			continue
		}
		name := table.Ident().Sanitize()
		for i, other := range r.routes {
			for _, ot := range other.Transform.Tables() {
				if !ot.Delete && ot.Ident().Sanitize() == name {
					what := "the default route"
					if i > 0 {
						what = fmt.Sprintf("source %q", r.sources[i-1])
					}
					return fmt.Errorf("table %s is already written by %s", name, what)
				}
			}
		}
	}
	for _, t := range tables {
		r.detailed = r.detailed || len(tables) > 1 || t.Update || t.Tombstones || t.Delete
	}
	r.routes = append(r.routes, route)
	return nil
}

// route returns the index of source's route; 0 is the default.
func (r *Router) route(source string) int {
	if i, ok := r.bySource[source]; ok {
		return i
	}
	return 0
}

// Sources returns the sources with a route of their own, in the order
// they were added.
func (r *Router) Sources() []string { return slices.Clone(r.sources) }

// Pipeline is the transform of one source's lines, as package pipeline
// compiles it from a spec: a [Transform] whose Source names the source it
// takes and whose String names it in errors (its spec file).
type Pipeline interface {
	Transform
	Source() string
	String() string
}

// Routes returns the worker program's routing: each pipeline's source to
// its tables, every other source to the raw landing table rawTable (see
// [NewRawLanding]), each route with its own [PostgresStore] on pool. It
// also returns the stores, the raw landing's first, whose tables must be
// created ([PostgresStore.CreateTables]) before the worker writes. It
// touches neither the database nor pool, which may be nil when nothing is
// written. Errors name the pipeline's spec file.
func Routes(pool *pgxpool.Pool, rawTable string, pipelines []Pipeline, logger *slog.Logger) (*Router, []*PostgresStore, error) {
	raw, err := NewRawLanding(rawTable)
	if err != nil {
		return nil, nil, err
	}
	rawStore, err := NewPostgresStore(pool, raw.Tables(), logger)
	if err != nil {
		return nil, nil, err
	}
	router, err := NewRouter(Route{Transform: raw, Store: rawStore})
	if err != nil {
		return nil, nil, err
	}
	stores := []*PostgresStore{rawStore}
	for _, p := range pipelines {
		store, err := NewPostgresStore(pool, p.Tables(), logger)
		if err != nil {
			return nil, nil, fmt.Errorf("pipeline %s: %w", p, err)
		}
		if err := router.Handle(p.Source(), Route{Transform: p, Store: store}); err != nil {
			return nil, nil, fmt.Errorf("pipeline %s: %w", p, err)
		}
		stores = append(stores, store)
	}
	return router, stores, nil
}
