"""history family of the clinic app."""
