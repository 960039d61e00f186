"""ModelPool operator (kopf): builds and reconciles the vLLM Deployments of each pool."""
