"""HTTP localization service."""
