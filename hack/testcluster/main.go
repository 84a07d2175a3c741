// Command testcluster is the real Kubernetes control plane used by eg-operator's tests and by
// `make cluster`: one binary holding an embedded etcd, kube-apiserver and kube-controller-manager,
// each started as its own process by the first argument. One binary means one link step and one
// cached artifact per Kubernetes release.
package main

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"k8s.io/component-base/cli"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testcluster etcd|kube-apiserver|kube-controller-manager [flags]")
		os.Exit(2)
	}
	role, rest := os.Args[1], os.Args[2:]
	if os.Getenv("TESTCLUSTER_EXIT_WITH_PARENT") == "1" {
		go exitWithParent()
	}
	// The Kubernetes commands parse os.Args themselves through cobra.
	os.Args = append([]string{role}, rest...)
	switch role {
	case "etcd":
		os.Exit(runEtcd(rest))
	case "kube-apiserver":
		os.Exit(cli.Run(apiserver.NewAPIServerCommand()))
	case "kube-controller-manager":
		os.Exit(cli.Run(controllermanager.NewControllerManagerCommand()))
	default:
		fmt.Fprintf(os.Stderr, "testcluster: unknown role %q\n", role)
		os.Exit(2)
	}
}

// exitWithParent stops this process when the process that started it goes away, so a test binary
// that ends (or is killed) never leaves a control plane behind. It polls the parent PID rather than
// using PR_SET_PDEATHSIG, which fires when the parent *thread* exits, and test threads come and go.
func exitWithParent() {
	parent := os.Getppid()
	for {
		time.Sleep(200 * time.Millisecond)
		if os.Getppid() != parent {
			// The first SIGTERM starts a graceful shutdown; Kubernetes components exit at once on
			// a second, and kube-apiserver's graceful path can stall once its clients are gone.
			_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
			time.Sleep(2 * time.Second)
			_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
			time.Sleep(5 * time.Second)
			os.Exit(1)
		}
	}
}
