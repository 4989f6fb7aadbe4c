# Imports pandas without declaring it: in an isolated environment of the bare profile, the build
# must fail (instead of the recipe silently using the host's pandas).
from setuptools import setup

setup(
    name="envtest-undeclared",
    version="0.1.0",
    packages=["envtest_undeclared"],
    entry_points={"Training": ["training_pipeline=envtest_undeclared.pipeline"]},
)
