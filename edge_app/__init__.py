"""edge_app stage."""
