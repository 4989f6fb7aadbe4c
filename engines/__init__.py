"""Built-in engines, registered through the `mlinstance_runtime.engines` entry-point group like any
third-party engine. Importing this package imports no engine (and no torch)."""
