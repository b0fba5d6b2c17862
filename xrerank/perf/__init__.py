"""Performance: bench (load against a deployment) and tune (try layouts, keep the best)."""
