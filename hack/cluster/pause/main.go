// Command pause is the pod sandbox of the local cluster (hack/cluster-up): it
// holds the pod's namespaces and waits for SIGTERM or SIGINT. Built static and
// packed into a local image so that containerd never pulls one.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
