"""From a distance between two templates to a similarity and the false-match rate it stands for.

:mod:`regard.scoring.normalize` shifts each pair's distance by its templates' cluster offsets
(fair score normalization); :mod:`regard.scoring.calibrate` maps the normalized score to a
similarity and an estimated FMR through the shipped calibration table.
"""
