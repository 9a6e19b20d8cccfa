"""``videolang demo METHOD``: train and evaluate one method on the synthetic world and print
its numbers next to the baselines they must beat (one module per method)."""
