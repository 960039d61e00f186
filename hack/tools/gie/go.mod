// The Gateway API Inference Extension, pinned: its InferencePool CRD is installed into the local cluster
// from this module (hack/tools/build.sh copies it next to the cluster binaries), never written by hand.
module headway.dev/hack/tools/gie

go 1.26.0

require sigs.k8s.io/gateway-api-inference-extension v1.6.2

// Gateway API itself: its HTTPRoute CRD validates the sample route to an InferencePool (deploy/samples/httproute-inferencepool.yaml).
require sigs.k8s.io/gateway-api v1.6.3
