"""Data: camera conventions, scenes, image preparation, readers, writers, synthetic scenes."""
