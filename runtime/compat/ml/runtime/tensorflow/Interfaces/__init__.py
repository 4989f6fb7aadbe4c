"""`ml.runtime.tensorflow.Interfaces`: `AbstractTrainer.AbstractTrainer`, `AbstractScorer.AbstractScorer`."""
