"""The benchmark's scikit-learn model (bench_online.py's comparison with `mlflow models serve`):
a scaled ridge regression of a week's sales on six numeric columns of the retail data. What
train() returns is pickled by the runtime; the benchmark hands the same pickle to MLflow."""
import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

COLUMNS = ["temperature", "regionalFuelPrice", "markDown", "cpi", "unemployment", "storeSize"]


def load(config):
    return pd.read_csv(config.get("trainingDataSetId") or config["scoringDataSetId"])


def train(config, data):
    model = make_pipeline(StandardScaler(), Ridge(alpha=float(config.get("alpha", "1.0"))))
    model.fit(data[COLUMNS], data["weeklySales"])
    return model


def score(config, data, model):
    # a list of predictions, as MLflow's scoring server answers for a scikit-learn model
    return pd.Series(model.predict(data[COLUMNS]), name="prediction")


def save(config, prediction):
    prediction.to_frame().to_csv(config["scoringResultsDataSetId"], index=False)
