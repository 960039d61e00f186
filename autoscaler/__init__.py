"""SLO-driven autoscaler that picks the cheapest mix of GPU variants."""
