"""Evaluation: replaying bags, reports, covariance calibration and the held-out benchmark.

Holds :mod:`.replay` (+ its CLI), :mod:`.report` (the public API of the report; its parts in
:mod:`.report_data`, :mod:`.report_metrics`, :mod:`.report_files`, :mod:`.report_map`,
:mod:`.report_plots`, :mod:`.report_snapshots`, :mod:`.report_panels`, :mod:`.report_html`),
:mod:`.calibration` (+ CLI) and :mod:`.benchmark` (+ CLI).

May import: :mod:`..core`, :mod:`..pipeline`, :mod:`..matcher`, :mod:`..tiles`, :mod:`..sim`
(bag reading, sidecars), :mod:`..train` (pair data sets, metrics). Never rclpy or a ROS message
package: bags are read with rosbags and decoded by the pipeline's ROS-free message decoders.
"""
