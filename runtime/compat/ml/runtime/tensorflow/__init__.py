"""`ml.runtime.tensorflow`: base classes of class-based (Tensorflow, PyTorch) recipes."""
