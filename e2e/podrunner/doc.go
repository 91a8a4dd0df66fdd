// Package podrunner runs a pod's containers on this machine the way a kubelet
// would, for the end-to-end tests and the demo, where there is a real API
// server but no node, no container runtime and no kubelet.
//
// Given a pod as the API server stored it (after the webhook injected it),
// Start:
//
//  1. lays out the pod's volumes as directories under a scratch root:
//     emptyDir → an empty directory (mode 0777, as kubelet creates it; not a
//     tmpfs, and its group is not changed to the pod's fsGroup);
//     projected → a directory holding each serviceAccountToken source's token at
//     its path (TokenRequest for the pod's ServiceAccount, bound to the pod's
//     name and UID, with exactly the source's audience and expirationSeconds),
//     rewritten before it expires like kubelet does (at 80% of its lifetime),
//     plus configMap sources read from the API server;
//  2. runs the init containers in order: a plain init container must exit 0
//     before the next starts; a native sidecar (restartPolicy: Always) is
//     started and its startupProbe exec command is run, the same way as the
//     container itself, every periodSeconds until it passes;
//  3. starts the regular containers whose command maps to a local binary and
//     reports the others as not run (the runner has no images).
//
// Use (after the webhook injected pod ns/name):
//
//	bins, _ := podrunner.Build(ctx, t.TempDir())
//	p, err := podrunner.Start(ctx, podrunner.Options{Kube: c.Kube,
//		Commands: map[string]string{"/kvinject-agent": bins.Agent}, CAFile: caFile}, ns, name)
//	defer p.Stop(context.Background())
//	if p.Phase() == corev1.PodFailed {
//		msg := p.Failed().TerminationMessage() // what kubectl describe pod shows
//	}
//	dir, _ := p.HostPath("app", "/mnt/secrets") // the files as container app sees them
//	p.UpdateStatus(ctx)                          // container states into the pod's status
//
// # Processes instead of containers
//
// A container runs as a child process: Options.Commands maps the container's
// command[0] (a path inside its image, "/kvinject") to a binary on this machine;
// the rest of the command and the args are passed exactly. The environment is
// exactly the container's env (in order; value and fieldRef to the pod's
// metadata.name, metadata.namespace, metadata.uid, spec.serviceAccountName) plus
// HOSTNAME (the pod name, as kubelet sets it). Nothing of the caller's
// environment is inherited. $(VAR) references are not expanded (the injector
// writes none). Processes run as the caller's user: securityContext
// (runAsUser, capabilities, read-only root) is not applied.
//
// Without mount namespaces a process sees the host's file system, so paths that
// name a volumeMount must be rewritten to the host directory behind it. These
// rewrites, and only these, are made:
//
//   - an env value that is an absolute path inside a volumeMount's mountPath
//     (AZURE_FEDERATED_TOKEN_FILE) → the same path under the volume's host
//     directory (subPath honoured);
//   - KVINJECT_CONFIG (agent/config): its dir, the agent's mount of the secrets
//     volume, is rewritten the same way; its metricsAddr, when set, becomes a
//     free loopback port (Container.MetricsAddr), because every process shares
//     the host's network namespace and two pods would both want 127.0.0.1:9797;
//   - KVINJECT_TERMINATION_LOG is added, naming a host file that stands in for
//     terminationMessagePath (the agent's documented twin of
//     --termination-log); after exit it is read like kubelet does (at most 4096
//     bytes; FallbackToLogsOnError uses the log tail);
//   - SSL_CERT_FILE is added when Options.CAFile is set: it stands in for the
//     node image's trust store, which in a real cluster would trust Azure's
//     certificates and here must trust the emulator's CA.
//
// Stop sends SIGTERM to every running process (regular containers first, then
// sidecars in reverse order, as kubelet does), waits up to the pod's
// terminationGracePeriodSeconds, then kills. Every process runs in its own
// process group and, on Linux, dies with the caller (PR_SET_PDEATHSIG), so a
// crashed test leaves nothing behind.
//
// UpdateStatus writes the containers' states into the pod's status in the API
// server (init container terminated with its exit code and termination message,
// sidecar running and started), so kubectl describe pod shows what a user would
// see on a real node.
package podrunner
