"""updates family of the clinic app."""
