"""Satellite map tiles: fetching, caching and cutting metric patches.

Holds the HTTP client (:mod:`.http`), the atomic on-disk cache (:mod:`.cache`, :mod:`.store`),
tile sources (:mod:`.source`: URL templates, MBTiles, directories), codecs, the metric patch
sampler (:mod:`.patch`), a local tile server (:mod:`.server`) and synthetic tiles.

May import: :mod:`..core` and the top-level CLI helpers. Never torch or ROS.
"""
