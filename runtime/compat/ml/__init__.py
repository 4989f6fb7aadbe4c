"""The platform's `ml.runtime` base classes as recipes import them, implemented locally (only a
recipe's environment sees this package)."""
