# A function-based recipe written for the platform's pandas 1.x image: its setup.py lists no
# libraries (the image supplied them), as the platform's own recipes did.
from setuptools import find_packages, setup

setup(
    name="envtest-pandas1",
    version="1.0.0",
    packages=find_packages(),
    entry_points={
        "Training": ["training_pipeline=envtest_pandas1.pipeline"],
        "Scoring": ["scoring_pipeline=envtest_pandas1.pipeline"],
    },
)
