//go:build tools

// Keeps the suite's echo server (sigs.k8s.io/gateway-api/conformance/echo-basic) in go.sum, so
// `go build` can build it for the process kubelet.
package conformance

import _ "sigs.k8s.io/gateway-api/conformance/echo-basic"
