"""Visualization: point clouds, plots."""
