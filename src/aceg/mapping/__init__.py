"""Mapping: optimise a scene's map code (ACE-G) or head (ACE) from posed images."""
