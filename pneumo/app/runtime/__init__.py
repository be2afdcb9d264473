"""runtime family of the clinic app."""
