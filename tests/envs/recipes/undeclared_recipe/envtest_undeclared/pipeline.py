import pandas  # noqa: F401  (not in install_requires)


def train(config, data):
    return None
