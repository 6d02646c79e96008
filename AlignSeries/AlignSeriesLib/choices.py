"""The choices AlignSeries offers, defined once for the core, the panel, the command line and the API.

Kept free of imports so that the command line can build its ``--help`` without loading numpy or VTK.
"""

#: Geometry-based transform modes (:func:`AlignSeriesLib.alignment.align_geometries`).
GEOMETRY_MODES = ("frameOfReference", "centers", "moments")
#: Landmark registration modes (:func:`AlignSeriesLib.landmarks.register_landmarks`).
LANDMARK_MODES = ("rigid", "similarity", "affine")
#: How two point lists are paired (:func:`AlignSeriesLib.landmarks.match_points`).
MATCH_METHODS = ("order", "labels", "auto")
#: Interpolations of :func:`AlignSeriesLib.resample.resample_to_geometry`.
INTERPOLATIONS = ("nearest", "linear", "cubic")
#: Models of the intensity refinement (:func:`AlignSeriesLib.registration.register`).
REFINE_MODELS = ("rigid", "affine")
