"""Model: frozen image encoder, scene-agnostic map-code regressor, map code, ACE head."""
