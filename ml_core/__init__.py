"""ml_core: the library behind the MoGE daily pipeline.

It never imports dagster: every function takes and returns plain Python, NumPy, Polars/Arrow
or torch objects so it runs from a notebook, a script or the Dagster assets alike.
"""

__version__ = "0.1.0"
