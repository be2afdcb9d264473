"""clinic family of the clinic app."""
