"""capsched: adapters."""
