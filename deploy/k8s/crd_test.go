package k8s

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The KEDA and CloudNativePG API types live in the operators' own modules,
// which bring in controller-runtime and much of Kubernetes; none is in the
// module proxy as a small API-only module. These mirror the fields of their
// CRDs that the manifests use (keda.sh/v1alpha1 ScaledObject,
// postgresql.cnpg.io/v1 Cluster), with the CRDs' JSON names, and are
// decoded with unknown fields disallowed like the Kubernetes types: a field
// the manifests gain must be added here, after checking its name in the
// CRD.

// scaledObject mirrors keda.sh/v1alpha1 ScaledObject.
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion,omitempty"`
			Kind       string `json:"kind,omitempty"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		PollingInterval *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod  *int32 `json:"cooldownPeriod,omitempty"`
		MinReplicaCount *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount *int32 `json:"maxReplicaCount,omitempty"`
		Triggers        []struct {
			Type string `json:"type"`
			Name string `json:"name,omitempty"`
			// Metadata values are strings in the CRD: a bare number in
			// YAML does not decode, as KEDA would refuse it.
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// pgCluster mirrors postgresql.cnpg.io/v1 Cluster.
type pgCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Instances int    `json:"instances"`
		ImageName string `json:"imageName,omitempty"`
		Bootstrap struct {
			InitDB struct {
				Database string `json:"database"`
				Owner    string `json:"owner"`
			} `json:"initdb"`
		} `json:"bootstrap"`
		Storage struct {
			Size resource.Quantity `json:"size"`
		} `json:"storage"`
		Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	} `json:"spec"`
}

// appSecret is the Secret CloudNativePG makes for the application user of
// cluster c, and the keys of it the manifests may read.
func (c *pgCluster) appSecret() (name string, keys []string) {
	return c.Name + "-app", []string{"username", "password", "host", "port", "dbname", "uri"}
}

// natsValues mirrors the parts of the NATS Helm chart's values.yaml that
// nats/values.yaml sets.
type natsValues struct {
	Config struct {
		Cluster struct {
			Enabled  bool `json:"enabled"`
			Replicas int  `json:"replicas"`
		} `json:"cluster"`
		JetStream struct {
			Enabled   bool `json:"enabled"`
			FileStore struct {
				Enabled bool   `json:"enabled"`
				Dir     string `json:"dir"`
				PVC     struct {
					Enabled bool              `json:"enabled"`
					Size    resource.Quantity `json:"size"`
				} `json:"pvc"`
			} `json:"fileStore"`
			Merge struct {
				SyncInterval string `json:"sync_interval"`
			} `json:"merge"`
		} `json:"jetstream"`
		Monitor struct {
			Enabled bool `json:"enabled"`
			Port    int  `json:"port"`
		} `json:"monitor"`
		Merge struct {
			MaxPayload    string `json:"max_payload"`
			Authorization struct {
				Token string `json:"token"`
			} `json:"authorization"`
		} `json:"merge"`
	} `json:"config"`
	Container struct {
		Env   map[string]corev1.EnvVar `json:"env"`
		Merge struct {
			Resources corev1.ResourceRequirements `json:"resources"`
		} `json:"merge"`
	} `json:"container"`
	PodTemplate struct {
		TopologySpreadConstraints map[string]struct {
			MaxSkew           int    `json:"maxSkew"`
			WhenUnsatisfiable string `json:"whenUnsatisfiable"`
		} `json:"topologySpreadConstraints"`
	} `json:"podTemplate"`
	NATSBox struct {
		Enabled   bool `json:"enabled"`
		Container struct {
			Env map[string]corev1.EnvVar `json:"env"`
		} `json:"container"`
	} `json:"natsBox"`
}
