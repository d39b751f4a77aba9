"""aceg: visual relocalization by scene coordinate regression (ACE-G)."""

__version__ = "0.1.0"
