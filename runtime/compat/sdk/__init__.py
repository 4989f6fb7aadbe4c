"""Our own `sdk` package: the base classes PySpark recipes import (`sdk.data_loader.DataLoader`,
`sdk.data_saver.DataSaver`, `sdk.pipeline_factory.PipelineFactory`, `sdk.dataset_transformer.
DatasetTransformer`, `sdk.evaluation.regression.RegressionEvaluator`, `sdk.evaluation.
classification.ClassificationEvaluator`), written for mlinstance-runtime in the platform's
shapes. Only recipe workers see it (runtime/compat on their path), never the runtime itself.
"""
