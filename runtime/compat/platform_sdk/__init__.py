"""The Platform SDK for Python (`platform_sdk`) as recipes import it, implemented locally.

Only a recipe's environment sees this package (runtime/compat is put on its path); data set ids
resolve through the run's catalog (runtime.datasets, the file named by MLRUNTIME_DATASETS_FILE),
so `DatasetReader(ctx, config["trainingDataSetId"]).read()` reads the local file it names.
"""
__version__ = "0.1.0-local"
