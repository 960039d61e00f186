"""vLLM-faithful engine simulator."""
