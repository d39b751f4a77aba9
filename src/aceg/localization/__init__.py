"""Localization: scene coordinates -> 2D-3D correspondences -> RANSAC-PnP pose."""
