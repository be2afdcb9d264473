"""The clinic app: pipeline (bytes -> answer), web, history, dicom, clinic, updates, runtime."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
"""pneumo/app: the data folders live beside the code (models/, keys/, templates/, static/,
translations/, reference_xrays/)."""
