"""installer stage."""
