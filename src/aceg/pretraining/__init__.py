"""Query pre-training of the scene-agnostic regressor across many scenes."""
