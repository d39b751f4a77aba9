"""Baselines ACE-G is compared with (feature matching)."""
