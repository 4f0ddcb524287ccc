"""The control API (Quart-Trio on Hypercorn)."""
