"""The synthetic world: seeded layouts and styles, aerial and ground rendering, drives, bags.

Holds world generation (:mod:`.world` = the data model of :mod:`.world_model` plus the
generator package :mod:`.worldgen`; :mod:`.style`, the ground cameras' lenses :mod:`.lens`),
renderers (:mod:`.aerial`, :mod:`.ground` with the ray tables of :mod:`.ground_rays`),
drives with sensor models (the package :mod:`.drive`), rosbag2 writing (:mod:`.bag`, through
rosbags), training-pair data sets (:mod:`.dataset`) and tile serving.

May import: :mod:`..core`, :mod:`..tiles`, :mod:`..train` (only the pair format of
:mod:`..train.pairs`: camera records, reading pair data sets back for previews). Never ROS message packages: bags are written with rosbags' types.
"""
