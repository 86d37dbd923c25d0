// Package k8s holds jetline's Kubernetes manifests and the test that checks
// them; it has no code of its own. It is a module of its own so that the
// Kubernetes and kustomize libraries the test needs stay out of the
// programs' module.
//
//   - base/: the gateway (Deployment, LoadBalancer Service,
//     PodDisruptionBudget), the workers (Deployment with the pipeline specs
//     from a ConfigMap, PodDisruptionBudget), the namespace and the example
//     Secrets.
//   - components/keda: a KEDA ScaledObject scaling the workers on the lag
//     of consumer "workers" of stream INGEST.
//   - components/cloudnativepg: a CloudNativePG Cluster and the workers'
//     DATABASE_URL from it.
//   - components/gateway-tls: a TLS listener on 4443.
//   - overlays/keda and overlays/production: the base with those.
//   - nats/values.yaml: values for the official NATS Helm chart.
//
// `make test` runs the test: every kustomization is built as `kubectl apply
// -k` would build it, and every object decoded strictly into its API type.
package k8s
