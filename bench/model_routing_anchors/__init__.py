"""Other systems' model-routing decisions, each re-implemented in one small file that cites its source,
run on the same labelled prompts and split as headway's (bench/model_routing.py)."""
