"""capsched: tui."""
