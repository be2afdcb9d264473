"""web family of the clinic app."""
