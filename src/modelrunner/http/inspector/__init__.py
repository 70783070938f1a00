"""inspector."""
