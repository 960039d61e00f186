"""Development environment: a real local Kubernetes with fake GPU nodes, an engine runner, real services.

Nothing here ships in the chart; product code never imports it.
"""
