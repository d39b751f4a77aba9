"""Mapping: posed images -> a map file, by model (anchor model, map-code transformer, ACE
head); :func:`aceg.mapping.mapper.map_scene` dispatches."""
