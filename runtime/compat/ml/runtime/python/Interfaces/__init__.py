"""`ml.runtime.python.Interfaces`: the older class templates (one module per class)."""
