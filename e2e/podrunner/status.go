package podrunner

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// UpdateStatus writes the containers' current states into the pod's status in
// the API server, as kubelet would: terminated init containers with exit code,
// reason and termination message, running ones with started/ready, the app
// containers waiting while init has not finished. kubectl describe pod then
// shows what a user sees on a real node. The phase follows kubelet: a failed
// init container leaves the pod Pending (restartPolicy Always, kubelet would
// retry it) or Failed (restartPolicy Never).
func (p *Pod) UpdateStatus(ctx context.Context) error {
	p.mu.Lock()
	initStatuses := statuses(p.Pod.Spec.InitContainers, p.init)
	statuses := statuses(p.Pod.Spec.Containers, p.containers)
	phase := p.phase
	p.mu.Unlock()
	initialized := corev1.ConditionFalse
	if phase == corev1.PodRunning {
		initialized = corev1.ConditionTrue
	}
	if phase == corev1.PodFailed && p.Pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		phase = corev1.PodPending
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := p.o.Kube.CoreV1().Pods(p.Pod.Namespace).Get(ctx, p.Pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		pod.Status.Phase = phase
		pod.Status.InitContainerStatuses = initStatuses
		pod.Status.ContainerStatuses = statuses
		if pod.Status.StartTime == nil {
			pod.Status.StartTime = &now
		}
		setCondition(&pod.Status, corev1.PodInitialized, initialized, now)
		if _, err := p.o.Kube.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("podrunner: update status of pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		return nil
	})
}

// statuses lists a status for every container of specs, in spec order; those
// not reached yet wait in PodInitializing.
func statuses(specs []corev1.Container, run []*Container) []corev1.ContainerStatus {
	out := make([]corev1.ContainerStatus, 0, len(specs))
	for i, s := range specs {
		if i < len(run) {
			out = append(out, run[i].status())
			continue
		}
		out = append(out, corev1.ContainerStatus{Name: s.Name, Image: s.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}})
	}
	return out
}

func setCondition(s *corev1.PodStatus, t corev1.PodConditionType, v corev1.ConditionStatus, now metav1.Time) {
	for i := range s.Conditions {
		if s.Conditions[i].Type == t {
			if s.Conditions[i].Status != v {
				s.Conditions[i].Status, s.Conditions[i].LastTransitionTime = v, now
			}
			return
		}
	}
	s.Conditions = append(s.Conditions, corev1.PodCondition{Type: t, Status: v, LastTransitionTime: now})
}
