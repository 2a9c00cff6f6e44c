"""shmdask: dask's programming model on a single-node engine."""
__version__ = "0.1.0"
