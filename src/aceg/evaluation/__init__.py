"""Evaluation: pose errors, the standard accuracy table, pose results files."""
