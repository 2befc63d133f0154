// Command hostpath-provisioner is the dynamic volume provisioner of the local
// clusters (hack/cluster-up.sh; one per worker in hack/multinode-up.sh). For every pending
// PersistentVolumeClaim of its StorageClass it creates a "local" PersistentVolume under -root, pinned
// to the node, bound to that claim; when a claim is deleted and its volume is
// Released with reclaim policy Delete, it removes the directory and the volume.
//
// It polls instead of using informers: a local cluster has a handful of claims,
// and a poll loop has no cache to get wrong.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	// The name this provisioner answers to in StorageClass.provisioner.
	provisionerName = "shardedstore.io/hostpath"
	// The annotation Kubernetes' own provisioners set on volumes they create.
	provisionedBy = "pv.kubernetes.io/provisioned-by"
	// Set by the scheduler on a WaitForFirstConsumer claim once its pod has a node.
	selectedNode = "volume.kubernetes.io/selected-node"
)

type provisioner struct {
	client   kubernetes.Interface
	root     string
	nodeName string
}

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster")
	root := flag.String("root", "/var/lib/shardedstore-cluster/volumes", "directory that holds the volumes")
	nodeName := flag.String("node-name", "", "node the volumes live on (required)")
	interval := flag.Duration("interval", time.Second, "how often to look for claims and released volumes")
	flag.Parse()
	if *nodeName == "" {
		log.Fatal("-node-name is required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("loading kubeconfig %q: %v", *kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		log.Fatalf("creating client: %v", err)
	}
	p := &provisioner{client: client, root: *root, nodeName: *nodeName}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Printf("provisioner %s: node %s, root %s", provisionerName, p.nodeName, p.root)
	ticker := time.NewTicker(*interval)
	defer ticker.Stop()
	for {
		if err := p.provisionPending(ctx); err != nil {
			log.Printf("provisioning: %v", err)
		}
		if err := p.deleteReleased(ctx); err != nil {
			log.Printf("deleting released volumes: %v", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// ours tells whether a claim is waiting for this provisioner.
func (p *provisioner) ours(ctx context.Context, pvc *corev1.PersistentVolumeClaim) bool {
	if pvc.Status.Phase != corev1.ClaimPending || pvc.Spec.VolumeName != "" || pvc.DeletionTimestamp != nil {
		return false
	}
	if pvc.Spec.StorageClassName == nil {
		return false
	}
	sc, err := p.client.StorageV1().StorageClasses().Get(ctx, *pvc.Spec.StorageClassName, metav1.GetOptions{})
	if err != nil || sc.Provisioner != provisionerName {
		return false
	}
	// WaitForFirstConsumer: the scheduler names the node first, as it does for
	// every topology-aware provisioner. One provisioner runs per node (the
	// multi-node cluster of hack/multinode-up.sh runs one per worker), and each
	// takes only the claims placed on its own node: the volume is that node's disk.
	if sc.VolumeBindingMode != nil && *sc.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer {
		return pvc.Annotations[selectedNode] == p.nodeName
	}
	return true
}

func (p *provisioner) provisionPending(ctx context.Context) error {
	claims, err := p.client.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing claims: %w", err)
	}
	for i := range claims.Items {
		pvc := &claims.Items[i]
		if !p.ours(ctx, pvc) {
			continue
		}
		if err := p.provision(ctx, pvc); err != nil {
			log.Printf("claim %s/%s: %v", pvc.Namespace, pvc.Name, err)
		}
	}
	return nil
}

func (p *provisioner) provision(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	name := "pvc-" + string(pvc.UID)
	path := filepath.Join(p.root, name)
	// Root-owned and not world-writable, like a freshly formatted cloud disk: a pod that
	// does not run as root can write only through its fsGroup, which the kubelet applies to
	// "local" volumes (not to hostPath ones).
	if err := os.MkdirAll(path, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	reclaim := corev1.PersistentVolumeReclaimDelete
	className := ""
	if pvc.Spec.StorageClassName != nil {
		className = *pvc.Spec.StorageClassName
		if sc, err := p.client.StorageV1().StorageClasses().Get(ctx, className, metav1.GetOptions{}); err == nil && sc.ReclaimPolicy != nil {
			reclaim = *sc.ReclaimPolicy
		}
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{provisionedBy: provisionerName},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: pvc.Spec.Resources.Requests[corev1.ResourceStorage]},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              className,
			VolumeMode:                    pvc.Spec.VolumeMode,
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				Local: &corev1.LocalVolumeSource{Path: path},
			},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{p.nodeName},
				}}}},
			}},
		},
	}
	_, err := p.client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating volume %s: %w", name, err)
	}
	log.Printf("claim %s/%s: created volume %s at %s", pvc.Namespace, pvc.Name, name, path)
	return nil
}

func (p *provisioner) deleteReleased(ctx context.Context) error {
	volumes, err := p.client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing volumes: %w", err)
	}
	for i := range volumes.Items {
		pv := &volumes.Items[i]
		if pv.Annotations[provisionedBy] != provisionerName || pv.Status.Phase != corev1.VolumeReleased ||
			pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
			continue
		}
		var path string
		switch {
		case pv.Spec.Local != nil:
			path = pv.Spec.Local.Path
		case pv.Spec.HostPath != nil: // volumes made by earlier versions of this provisioner
			path = pv.Spec.HostPath.Path
		default:
			continue
		}
		if filepath.Dir(path) != filepath.Clean(p.root) {
			log.Printf("volume %s: path %s is outside %s, not deleting it", pv.Name, path, p.root)
			continue
		}
		if err := os.RemoveAll(path); err != nil {
			log.Printf("volume %s: removing %s: %v", pv.Name, path, err)
			continue
		}
		err := p.client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			log.Printf("volume %s: deleting: %v", pv.Name, err)
			continue
		}
		log.Printf("volume %s: released, deleted %s", pv.Name, path)
	}
	return nil
}
