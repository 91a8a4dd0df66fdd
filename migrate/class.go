package migrate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/agent/config"
)

// csiDriver is the Secrets Store CSI driver's name in a pod's csi volume.
const csiDriver = "secrets-store.csi.k8s.io"

// spcGroup is the API group of SecretProviderClass; v1 and v1alpha1 have the
// same schema.
const spcGroup = "secrets-store.csi.x-k8s.io"

// secretProviderClass mirrors the fields of SecretProviderClass in
// sigs.k8s.io/secrets-store-csi-driver/apis/v1 (apis/v1/secretproviderclass_types.go),
// which v1alpha1 shares. The Go module proxy does not serve that module, so
// these are copies, field for field, decoded strictly: a field this mirror
// lacks is reported, never dropped.
type secretProviderClass struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              secretProviderClassSpec `json:"spec,omitempty"`
	Status            struct {
		ByPod []*struct {
			ID        string `json:"id,omitempty"`
			Namespace string `json:"namespace,omitempty"`
		} `json:"byPod,omitempty"`
	} `json:"status,omitempty"`
}

type secretProviderClassSpec struct {
	Provider      string            `json:"provider,omitempty"`
	Parameters    map[string]string `json:"parameters,omitempty"`
	SecretObjects []*secretObject   `json:"secretObjects,omitempty"`
}

type secretObject struct {
	SecretName  string              `json:"secretName,omitempty"`
	Type        string              `json:"type,omitempty"`
	Labels      map[string]string   `json:"labels,omitempty"`
	Annotations map[string]string   `json:"annotations,omitempty"`
	Data        []*secretObjectData `json:"data,omitempty"`
}

type secretObjectData struct {
	ObjectName string `json:"objectName,omitempty"`
	Key        string `json:"key,omitempty"`
	PlainValue string `json:"plainValue,omitempty"`
}

// keyVaultObject mirrors KeyVaultObject of the Azure provider
// (pkg/provider/types/types.go), in its field order; encoded with omitempty
// it is what kvinject.io/objects takes.
type keyVaultObject struct {
	ObjectName           string `json:"objectName" yaml:"objectName"`
	ObjectAlias          string `json:"objectAlias,omitempty" yaml:"objectAlias,omitempty"`
	ObjectVersion        string `json:"objectVersion,omitempty" yaml:"objectVersion,omitempty"`
	ObjectVersionHistory int32  `json:"objectVersionHistory,omitempty" yaml:"objectVersionHistory,omitempty"`
	ObjectType           string `json:"objectType,omitempty" yaml:"objectType,omitempty"`
	ObjectFormat         string `json:"objectFormat,omitempty" yaml:"objectFormat,omitempty"`
	ObjectEncoding       string `json:"objectEncoding,omitempty" yaml:"objectEncoding,omitempty"`
	FilePermission       string `json:"filePermission,omitempty" yaml:"filePermission,omitempty"`
	// Vault is kvinject's addition, set when a pod reads several vaults.
	Vault string `json:"vault,omitempty" yaml:"vault,omitempty"`
}

// The Azure provider's parameter names (pkg/provider/types/types.go).
const (
	paramVault            = "keyvaultName"
	paramTenantID         = "tenantID"
	paramTenantIDLegacy   = "tenantId"
	paramClientID         = "clientID"
	paramPodIdentity      = "usePodIdentity"
	paramVMIdentity       = "useVMManagedIdentity"
	paramUserAssignedID   = "userAssignedIdentityID"
	paramAzureTokenProxy  = "useAzureTokenProxy"
	paramCloudName        = "cloudName"
	paramCloudEnvFileName = "cloudEnvFileName"
	paramObjects          = "objects"
)

// class is a SecretProviderClass as the Azure provider reads it, and why it
// cannot migrate.
type class struct {
	where           string
	namespace, name string
	vault           string
	tenantID        string
	clientID        string
	cloud           string
	// objectsText is the objects parameter as the class has it.
	objectsText string
	objects     []keyVaultObject
	// files are the objects' file names (alias, else name).
	files []string
	// secrets are the synced Secrets, by name.
	secrets  map[string]*secretObject
	problems []string
	warnings []string
}

func (c *class) String() string { return "SecretProviderClass " + c.namespace + "/" + c.name }

// readClass decodes a SecretProviderClass and reads its parameters as the
// Azure provider does: every value trimmed, tenantID before the legacy
// tenantId, booleans with strconv.ParseBool.
func readClass(j []byte, where, namespace string) *class {
	var spc secretProviderClass
	c := &class{where: where, secrets: map[string]*secretObject{}}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spc); err != nil {
		c.problems = append(c.problems, fmt.Sprintf("not a SecretProviderClass of %s/v1: %v", spcGroup, err))
		return c
	}
	c.namespace, c.name = spc.Namespace, spc.Name
	if c.namespace == "" {
		c.namespace = namespace
	}
	if spc.Spec.Provider != "azure" {
		c.problems = append(c.problems, fmt.Sprintf("provider %q is not azure; kvinject reads Azure Key Vault only", spc.Spec.Provider))
		return c
	}
	p := map[string]string{}
	for k, v := range spc.Spec.Parameters {
		p[k] = strings.TrimSpace(v)
	}
	var unknown []string
	for k := range p {
		if !slices.Contains([]string{paramVault, paramTenantID, paramTenantIDLegacy, paramClientID, paramPodIdentity, paramVMIdentity,
			paramUserAssignedID, paramAzureTokenProxy, paramCloudName, paramCloudEnvFileName, paramObjects}, k) {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	for _, k := range unknown {
		c.warnings = append(c.warnings, fmt.Sprintf("parameters.%s is not a parameter the Azure provider reads; not migrated", k))
	}
	fail := func(format string, a ...any) { c.problems = append(c.problems, fmt.Sprintf(format, a...)) }

	c.vault = p[paramVault]
	if c.vault == "" {
		fail("parameters.%s is empty; the provider requires it", paramVault)
	}
	c.tenantID = p[paramTenantID]
	if c.tenantID == "" {
		c.tenantID = p[paramTenantIDLegacy]
	}
	if c.tenantID == "" {
		fail("parameters.%s is empty; the provider requires it", paramTenantID)
	}
	c.clientID = p[paramClientID]
	flag := func(name string) bool {
		if p[name] == "" {
			return false
		}
		b, err := strconv.ParseBool(p[name])
		if err != nil {
			fail("parameters.%s: %q is not a boolean", name, p[name])
		}
		return b
	}
	switch {
	case flag(paramPodIdentity):
		fail("parameters.%s: aad-pod-identity is not supported; kvinject signs in with workload identity only. "+
			"Give the AzureIdentity's managed identity a federated credential for the workload's ServiceAccount "+
			"(kvinject grants prints it), set parameters.%s to that identity's client ID, remove %s, and migrate again",
			paramPodIdentity, paramClientID, paramPodIdentity)
	case flag(paramVMIdentity):
		id, which := "the node's system-assigned identity", "a user-assigned managed identity"
		if u := p[paramUserAssignedID]; u != "" {
			id, which = "the node's user-assigned identity "+u, "that user-assigned identity, or a new one,"
		}
		fail("parameters.%s: the class signs in as %s, which every pod on the node can use; kvinject signs in with workload identity only. "+
			"Give %s a federated credential for the workload's ServiceAccount (kvinject grants prints it), "+
			"set parameters.%s to its client ID, remove %s and %s, and migrate again",
			paramVMIdentity, id, which, paramClientID, paramVMIdentity, paramUserAssignedID)
	case flag(paramAzureTokenProxy):
		fail("parameters.%s: AKS identity bindings are not supported by this kvinject; remove it to sign in with workload identity (at most 20 federated credentials per identity)", paramAzureTokenProxy)
	}
	if name := p[paramCloudName]; name != "" {
		for _, known := range config.KnownCloudNames() {
			// The provider looks clouds up case-insensitively (go-autorest's EnvironmentFromName).
			if strings.EqualFold(name, known) {
				c.cloud = known
			}
		}
		if c.cloud == "" {
			fail("parameters.%s %q: kvinject knows %s", paramCloudName, name, strings.Join(config.KnownCloudNames(), ", "))
		}
	}
	if p[paramCloudEnvFileName] != "" {
		fail("parameters.%s: custom cloud environment files (Azure Stack) are not supported", paramCloudEnvFileName)
	}
	c.objectsText = p[paramObjects]
	c.readObjects(p[paramObjects])
	c.readSecretObjects(spc.Spec.SecretObjects)
	return c
}

// readObjects reads the objects parameter: a YAML map whose array holds one
// YAML string per object, as the provider's GetObjectsArray does. Unknown
// fields, which the provider ignores, are reported.
func (c *class) readObjects(s string) {
	if s == "" {
		c.problems = append(c.problems, "parameters.objects is empty; the provider requires it")
		return
	}
	var a struct {
		Array []string `json:"array"`
	}
	if err := yaml.UnmarshalStrict([]byte(s), &a); err != nil {
		c.problems = append(c.problems, fmt.Sprintf("parameters.objects: not the provider's shape (array: of YAML strings): %v", err))
		return
	}
	for i, item := range a.Array {
		var o keyVaultObject
		if err := yaml.UnmarshalStrict([]byte(item), &o); err != nil {
			c.problems = append(c.problems, fmt.Sprintf("parameters.objects array[%d]: %v (the provider ignores unknown fields; remove them)", i, err))
			continue
		}
		if o.Vault != "" {
			c.problems = append(c.problems, fmt.Sprintf("parameters.objects array[%d]: vault is not a field of the provider; remove it", i))
			continue
		}
		for _, f := range []*string{&o.ObjectName, &o.ObjectAlias, &o.ObjectVersion, &o.ObjectType, &o.ObjectFormat, &o.ObjectEncoding, &o.FilePermission} {
			*f = strings.TrimSpace(*f)
		}
		c.objects = append(c.objects, o)
		file := o.ObjectAlias
		if file == "" {
			file = o.ObjectName
		}
		c.files = append(c.files, file)
	}
}

// readSecretObjects indexes the synced Secrets. Each data entry names a file
// of the mount (objectName is the object's alias when it has one) or carries
// a plainValue.
func (c *class) readSecretObjects(sos []*secretObject) {
	for i, so := range sos {
		if so == nil {
			continue
		}
		if _, dup := c.secrets[so.SecretName]; dup {
			c.problems = append(c.problems, fmt.Sprintf("secretObjects[%d]: Secret %q is synced twice", i, so.SecretName))
			continue
		}
		for j, d := range so.Data {
			if d == nil {
				continue
			}
			// The driver trims both (secretutil.GetSecretData).
			d.ObjectName, d.Key = strings.TrimSpace(d.ObjectName), strings.TrimSpace(d.Key)
			if d.PlainValue == "" && !slices.Contains(c.files, d.ObjectName) {
				c.problems = append(c.problems, fmt.Sprintf("secretObjects[%d].data[%d]: objectName %q is no file of the class (an objectAlias, or an objectName without one)", i, j, d.ObjectName))
			}
		}
		c.secrets[so.SecretName] = so
	}
}

// entry finds the data entry of a synced Secret for key.
func (so *secretObject) entry(key string) *secretObjectData {
	for _, d := range so.Data {
		if d != nil && d.Key == key {
			return d
		}
	}
	return nil
}

// keys are the synced Secret's keys, sorted (the order envFrom sets them in).
func (so *secretObject) keys() []string {
	var ks []string
	for _, d := range so.Data {
		if d != nil && !slices.Contains(ks, d.Key) {
			ks = append(ks, d.Key)
		}
	}
	slices.Sort(ks)
	return ks
}
