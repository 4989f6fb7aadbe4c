"""MLInstance Runtime: a local, open execution layer for Sensei ML API MLInstances.

Importing this package is cheap: torch, pyspark and ray are imported only by the parts that use them.
"""
__version__ = "0.1.0"
