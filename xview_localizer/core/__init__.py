"""Geometry core: the conventions every other part shares.

Holds the error types (:mod:`.errors`), SE(2) poses (:mod:`.se2`), geodesy and map frames
(:mod:`.geo`: WGS-84 <-> local ENU, Web-Mercator tiles; :mod:`.mapframe`: the node's map frame),
camera models (:mod:`.camera` pinhole, :mod:`.camera_pano` equirectangular), lifting pixels
into the BEV frame (:mod:`.lifting`), depth helpers (:mod:`.depth_utils`), the one
correspondence contract (:mod:`.correspondences`) and the weighted Procrustes solver
(:mod:`.procrustes`).

May import: numpy, OpenCV, pyproj and the standard library. Nothing else of ours, no torch,
no ROS.
"""
