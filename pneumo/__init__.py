"""Pediatric chest X-ray pneumonia screening: the `pneumo` command line."""

__version__ = "0.1.0"
