"""capsched: simulations."""
