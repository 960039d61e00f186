"""Routing: filters → weighted scorers → picker, and the presets built from them."""
