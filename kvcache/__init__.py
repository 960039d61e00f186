"""KV-cache index fed by the engines' own KV events."""
