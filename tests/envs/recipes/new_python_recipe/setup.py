from setuptools import setup

setup(
    name="envtest-newpy",
    version="0.1.0",
    packages=["envtest_newpy"],
    python_requires=">=3.99",
    entry_points={"Training": ["training_pipeline=envtest_newpy.pipeline"]},
)
