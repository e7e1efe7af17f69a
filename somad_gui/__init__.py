"""SOMAD Inspector: the desktop window of the SOMAD anomaly-detection pipeline.

The package is split the napari way: pure-Python models (``session``, ``store``, ``scoring``, the browser's item
model, the threshold statistics, the export renderers) apart from Qt views (the docks under ``browser``,
``training``, ``viewer``, ``som_panes``, ``threshold``, ``export``) and from the background ``workers``.
Every call into the pipeline goes through ``import somad`` and its public names.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
