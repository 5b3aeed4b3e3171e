"""Numbers about models and their data, computed with NumPy (no plotting, no web framework)."""
