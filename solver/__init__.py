"""capsched: solver."""
