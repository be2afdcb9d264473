"""pipeline family of the clinic app."""
