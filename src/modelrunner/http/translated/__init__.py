"""translated."""
