"""`ml.runtime.python`: evaluator and interface base classes of the platform's Python runtime."""
