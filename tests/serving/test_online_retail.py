"""retail-sales online, against a real `run serve-model`: the predictions equal `run score`'s of
the same rows (the whole scoring file in one request, and each store's first week alone, whose
past lies in the Model's history), `run predict` answers the same, and bad rows are a 4xx naming
the column and the row, never the value. One retail-sales Model (a small, quick network) trained
by `run train` for the module."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from serving_helpers import Served, cli_env

REPO = Path(__file__).resolve().parents[2]
RETAIL = REPO.parent / "shared" / "data" / "retail"
FAST = {"epochs": "3", "n_estimators": "2", "hidden_size": "8", "max_depth": "2"}
SECRET = "s3cret-value-7"


def _env() -> dict[str, str]:
    return cli_env()


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cli.main", *args, "--home", str(home)],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)


def _summary(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def retail(tmp_path_factory):
    import pandas as pd

    root = tmp_path_factory.mktemp("online-retail")
    home = root / "home"
    config = {"name": "retail online", "engineId": "retail-sales", "tasks": [
        {"name": "train", "parameters": [
            {"key": "trainingDataSetId", "value": str(RETAIL / "retail-training.csv")},
            *({"key": k, "value": v} for k, v in FAST.items())]},
        {"name": "score", "parameters": []}]}
    (root / "retail.json").write_text(json.dumps(config))
    trained = _summary(_cli(home, "train", str(root / "retail.json"), "--json"))
    scores = root / "scores.parquet"
    _summary(_cli(home, "score", trained["mlInstanceId"] if "mlInstanceId" in trained
                  else str(root / "retail.json"), "--model", trained["modelId"], "--json",
                  "-p", f"scoringDataSetId={RETAIL / 'retail-scoring.csv'}",
                  "-p", f"scoringResultsDataSetId={scores}"))
    server = Served(home, "serve-model", trained["modelId"], probe="/ping",
                    log=root / "serve-model.log", env=_env(), wait_s=120)
    base = server.__enter__().base
    try:
        yield {"base": base, "home": home, "root": root, "model": trained["modelId"],
               "batch": pd.read_parquet(scores), "rows": pd.read_csv(RETAIL / "retail-scoring.csv")}
    finally:
        server.__exit__()


def _post(retail, body) -> httpx.Response:
    return httpx.post(retail["base"] + "/invocations", content=json.dumps(body),
                      headers={"Content-Type": "application/json"}, timeout=60)


def _records(frame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def _assert_equal_to_batch(retail, predictions: list[dict]) -> None:
    import numpy as np
    import pandas as pd

    got = pd.DataFrame(predictions)
    got["date"] = pd.to_datetime(got["date"])
    merged = got.merge(retail["batch"], on=["store", "date"], suffixes=("", "_batch"))
    assert len(merged) == len(got)
    np.testing.assert_allclose(merged["prediction"].astype(float),
                               merged["prediction_batch"].astype(float), rtol=1e-6, equal_nan=True)


def test_online_predictions_equal_the_batch_score_of_the_same_rows(retail):
    rows, batch = retail["rows"], retail["batch"]
    whole = _post(retail, {"dataframe_split": json.loads(rows.to_json(orient="split",
                                                                      index=False))})
    assert whole.status_code == 200, whole.text
    predictions = whole.json()["predictions"]
    assert len(predictions) == len(batch)
    assert [p["store"] for p in predictions] == batch["store"].tolist()   # run score's order
    _assert_equal_to_batch(retail, predictions)

    # each store's first week alone (its past is all in the Model's history): ISO dates take
    # the columns path, the file's M/D/YY dates the pandas path; both answer as the batch did
    firsts = rows.groupby("store", sort=False).head(1)
    iso = firsts.assign(date=__import__("pandas").to_datetime(firsts["date"], format="%m/%d/%y")
                        .dt.strftime("%Y-%m-%d"))
    for frame in (iso.head(12), firsts.head(3)):
        for record in _records(frame):
            answer = _post(retail, {"dataframe_records": [record]})
            assert answer.status_code == 200, answer.text
            _assert_equal_to_batch(retail, answer.json()["predictions"])


def test_run_predict_answers_as_the_server_does(retail):
    rows = retail["root"] / "rows.json"
    rows.write_text(json.dumps(_records(retail["rows"].head(40))))
    out = _cli(retail["home"], "predict", retail["model"], "-i", str(rows))
    assert out.returncode == 0, out.stderr
    _assert_equal_to_batch(retail, json.loads(out.stdout)["predictions"])


def test_bad_rows_are_a_4xx_naming_column_and_row_never_the_value(retail):
    record = _records(retail["rows"].head(1))[0]
    cases = [
        ([record, {**record, "store": SECRET}], "'store', row 1"),                 # pandas path
        ([{**record, "date": "2012-04-06", "weeklySales": True}], "'weeklySales', row 0"),
        ([{**record, "date": "2012-04-06"}, {**record, "date": f"{SECRET}"}], "'date', row 1"),
        ([{**record, "date": "2012-04-06"}, {**record, "date": "9999-01-01"}], "'date', row 1"),
        ([record, {**record, "store": None}], "'store', row 1"),
        ([{k: v for k, v in record.items() if k != "weeklySales"}], "'weeklySales'"),
    ]
    for rows, named in cases:
        answer = _post(retail, {"dataframe_records": rows})
        assert 400 <= answer.status_code < 500, (rows, answer.text)
        detail = answer.json()["detail"]
        assert named in detail, detail
        assert SECRET not in answer.text
    missing = _post(retail, {"dataframe_records": [{"store": 1, "weeklySales": 5.0}]})
    assert missing.status_code == 400
    assert "Missing required column 'date'" in missing.json()["detail"]


def test_garbage_bodies_are_never_a_5xx(retail):
    from online_fuzz import encoded, mlflow_bodies, never_a_5xx, v2_bodies

    from engines.retail_sales.schema import SCHEMA

    names = list(SCHEMA)
    kinds = {name: "number" for name in names}
    kinds.update(date="datetime", store="integer", storeType="string", isHoliday="boolean")
    with httpx.Client(timeout=60) as client:
        def post(path):
            return lambda body, content_type: client.post(
                retail["base"] + path, content=body, headers={"Content-Type": content_type})

        # mostly rows that are nearly right, so that many reach the model
        never_a_5xx(post("/invocations"), encoded(mlflow_bodies(
            names, kinds, ["date", "store", "weeklySales"])))
        never_a_5xx(post(f"/v2/models/{retail['model']}/infer"), encoded(v2_bodies(names)))


def test_requests_batched_together_answer_as_each_alone(retail):
    """The host predicts a micro-batch in one pass: two requests for the same store and
    overlapping weeks (with different sales) never see each other's rows, and a request that
    repeats a week is refused alone (the host then answers the others on their own)."""
    import numpy as np

    from engines.retail_sales import RetailSalesEngine
    from runtime.engine import default_context
    from runtime.errors import MLRuntimeError
    from runtime.serving import payloads

    engine = RetailSalesEngine()
    ctx = default_context(engine, "score", {}, threads=1)
    model = engine.load_model(ctx, retail["home"] / "artifacts" / "models" / retail["model"])
    online = engine.online(ctx, model)

    def columns(frame):
        body = json.dumps({"dataframe_records": _records(frame)}).encode()
        return payloads.parse(body, "application/json", "mlflow", payloads.Limits(),
                              online.input_schema, online.required, columns=True).frame

    import pandas as pd

    rows = retail["rows"].assign(date=pd.to_datetime(retail["rows"]["date"], format="%m/%d/%y")
                                 .dt.strftime("%Y-%m-%d"))
    store = rows[rows["store"] == rows["store"].iloc[0]].head(6)
    first = store.iloc[0:5]
    second = store.iloc[2:6].assign(weeklySales=store.iloc[2:6]["weeklySales"] * 3)
    together = online.predict_many([columns(first), columns(second)])
    alone = [online.predict_many([columns(first)])[0], online.predict_many([columns(second)])[0]]
    for both, single in zip(together, alone):
        np.testing.assert_allclose(both["prediction"], single["prediction"], rtol=1e-6)
        assert list(both["store"]) == list(single["store"])
    with pytest.raises(MLRuntimeError, match="more than one row for the same store and date") \
            as refused:
        online.predict_many([columns(first), columns(pd.concat([first.head(1)] * 2))])
    assert refused.value.status == 400
