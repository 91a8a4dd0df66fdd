package podrunner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// defaultTokenSeconds is the API server's default expirationSeconds of a
// projected serviceAccountToken source.
const defaultTokenSeconds = 3600

// layOutVolumes creates a host directory for every volume a container can use.
// ctx bounds the first token requests; rctx bounds the refreshers.
func (p *Pod) layOutVolumes(ctx, rctx context.Context) error {
	for i := range p.Pod.Spec.Volumes {
		v := &p.Pod.Spec.Volumes[i]
		dir, err := p.scratch("volumes", v.Name)
		if err != nil {
			return err
		}
		switch {
		case v.EmptyDir != nil:
			// kubelet creates emptyDir volumes world-writable so any UID in the
			// pod can write; MkdirAll is subject to the umask, Chmod is not.
			if err := os.Chmod(dir, 0o777); err != nil {
				return fmt.Errorf("podrunner: volume %s: %w", v.Name, err)
			}
		case v.Projected != nil:
			if err := p.project(ctx, rctx, v, dir); err != nil {
				return err
			}
		default:
			// Left empty; a container that mounts it fails in newContainer.
			continue
		}
		p.volumes[v.Name] = dir
	}
	return nil
}

func (p *Pod) project(ctx, rctx context.Context, v *corev1.Volume, dir string) error {
	mode := os.FileMode(0o644) // the API server's default for defaultMode
	if m := v.Projected.DefaultMode; m != nil {
		mode = os.FileMode(*m)
	}
	for j, src := range v.Projected.Sources {
		switch {
		case src.ServiceAccountToken != nil:
			t := src.ServiceAccountToken
			path := filepath.Join(dir, t.Path)
			exp, err := p.writeToken(ctx, t, path, mode)
			if err != nil {
				return fmt.Errorf("podrunner: volume %s sources[%d]: %w", v.Name, j, err)
			}
			p.wg.Add(1)
			go p.refreshToken(rctx, t, path, mode, exp)
		case src.ConfigMap != nil:
			// kubelet retries the mount until the ConfigMap exists, as
			// kube-root-ca.crt does a moment after its namespace.
			var cm *corev1.ConfigMap
			err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
				var err error
				cm, err = p.o.Kube.CoreV1().ConfigMaps(p.Pod.Namespace).Get(ctx, src.ConfigMap.Name, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return false, nil
				}
				return err == nil, err
			})
			if err != nil {
				return fmt.Errorf("podrunner: volume %s sources[%d]: configMap %s: %w", v.Name, j, src.ConfigMap.Name, err)
			}
			items := src.ConfigMap.Items
			if len(items) == 0 {
				for k := range cm.Data {
					items = append(items, corev1.KeyToPath{Key: k, Path: k})
				}
			}
			for _, it := range items {
				m := mode
				if it.Mode != nil {
					m = os.FileMode(*it.Mode)
				}
				if err := writeFileAtomic(filepath.Join(dir, it.Path), []byte(cm.Data[it.Key]), m); err != nil {
					return fmt.Errorf("podrunner: volume %s: %w", v.Name, err)
				}
			}
		case src.DownwardAPI != nil:
			// The ServiceAccount admission plugin's kube-api-access volume
			// projects the namespace; nothing else is supported.
			for _, it := range src.DownwardAPI.Items {
				if it.FieldRef == nil || it.FieldRef.FieldPath != "metadata.namespace" {
					return fmt.Errorf("podrunner: volume %s sources[%d]: only the downwardAPI item metadata.namespace is supported", v.Name, j)
				}
				if err := writeFileAtomic(filepath.Join(dir, it.Path), []byte(p.Pod.Namespace), mode); err != nil {
					return fmt.Errorf("podrunner: volume %s: %w", v.Name, err)
				}
			}
		default:
			return fmt.Errorf("podrunner: volume %s sources[%d]: only serviceAccountToken, configMap and downwardAPI projections are supported", v.Name, j)
		}
	}
	return nil
}

// writeToken requests a token for the pod's ServiceAccount bound to the pod,
// exactly as the projection asks, and writes it to path. It returns the
// token's expiry.
func (p *Pod) writeToken(ctx context.Context, t *corev1.ServiceAccountTokenProjection, path string, mode os.FileMode) (time.Time, error) {
	seconds := int64(defaultTokenSeconds)
	if t.ExpirationSeconds != nil {
		seconds = *t.ExpirationSeconds
	}
	var audiences []string // empty: the API server's own audiences, as kubelet sends it
	if t.Audience != "" {
		audiences = []string{t.Audience}
	}
	sa := p.Pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr, err := p.o.Kube.CoreV1().ServiceAccounts(p.Pod.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         audiences,
			ExpirationSeconds: &seconds,
			BoundObjectRef: &authenticationv1.BoundObjectReference{
				APIVersion: "v1", Kind: "Pod", Name: p.Pod.Name, UID: p.Pod.UID,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return time.Time{}, fmt.Errorf("token request for service account %s/%s bound to pod %s: %w", p.Pod.Namespace, sa, p.Pod.Name, err)
	}
	if err := writeFileAtomic(path, []byte(tr.Status.Token), mode); err != nil {
		return time.Time{}, err
	}
	p.log.Debug("wrote service account token", "path", path, "expires", tr.Status.ExpirationTimestamp.Time)
	return tr.Status.ExpirationTimestamp.Time, nil
}

// refreshAfter is when kubelet's token manager replaces a token: after 80% of
// its lifetime. Tests shorten it.
var refreshAfter = func(ttl time.Duration) time.Duration { return ttl * 8 / 10 }

// refreshToken rewrites the token when refreshAfter has passed, until ctx ends.
func (p *Pod) refreshToken(ctx context.Context, t *corev1.ServiceAccountTokenProjection, path string, mode os.FileMode, exp time.Time) {
	defer p.wg.Done()
	issued := time.Now()
	for {
		wait := time.Until(issued.Add(p.refreshAfter(exp.Sub(issued))))
		if wait < time.Second {
			wait = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		issued = time.Now()
		e, err := p.writeToken(ctx, t, path, mode)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.log.Error("refresh service account token", "path", path, "error", err)
			exp = issued.Add(10 * time.Second) // retry soon
			continue
		}
		exp = e
	}
}

// writeFileAtomic replaces path in one rename, so a reader never sees half a
// token (kubelet's atomic writer gives the same guarantee).
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), mode); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// mapPath maps path, as container c sees it, to the host, when it is inside one
// of c's volumeMounts (the longest mountPath wins, as nested mounts shadow).
func (p *Pod) mapPath(c *corev1.Container, path string) (string, bool) {
	best, host := "", ""
	for _, m := range c.VolumeMounts {
		mp := filepath.Clean(m.MountPath)
		rel, ok := within(path, mp)
		if !ok || len(mp) <= len(best) {
			continue
		}
		dir, ok := p.volumes[m.Name]
		if !ok {
			continue
		}
		best, host = mp, filepath.Join(dir, m.SubPath, rel)
	}
	return host, best != ""
}

// within reports whether path is dir or below it, and the rest of path.
func within(path, dir string) (string, bool) {
	if !filepath.IsAbs(path) {
		return "", false
	}
	path = filepath.Clean(path)
	if path == dir {
		return "", true
	}
	if dir == "/" {
		return strings.TrimPrefix(path, "/"), true
	}
	rest, ok := strings.CutPrefix(path, dir+"/")
	return rest, ok
}
