"""capsched: scheduler."""
