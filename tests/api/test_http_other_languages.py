"""Scala recipes are refused at registration, through the real server: a 400 that says what this
runtime does not run and what it does, and nothing registered — never a 201 whose runs fail. R
recipes run (tests/r_recipes); an R artifact without the platform's trainer and scorer is a 400
naming what it lacks."""
from __future__ import annotations

import io
import json
import zipfile

import pytest


def _zip(files: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


R_PACKAGE = _zip({"retailr/DESCRIPTION": "Package: retailr\nVersion: 0.1\n",
                  "retailr/R/train.R": "train <- function(config) lm(y ~ x)\n"})
R_PLATFORM = _zip({"recipe/applicationTrainer.R": "applicationTrainer <- function() {}\n",
                   "recipe/applicationScorer.R": "applicationScorer <- function() {}\n"})
SCALA_PROJECT = _zip({"retail/pom.xml": "<project></project>\n",
                      "retail/src/main/scala/Train.scala": "object Train\n"})
JAR = _zip({"META-INF/MANIFEST.MF": "Manifest-Version: 1.0\n",
            "com/adobe/retail/Trainer.class": b"\xca\xfe\xba\xbe\x00\x00\x00\x34"})


def _upload(client, engine: dict, artifact: bytes, name: str):
    return client.post("/engines", files={
        "engine": (None, json.dumps(engine), "application/json"),
        "defaultArtifact": (name, artifact, "application/octet-stream")})


@pytest.mark.parametrize("artifact, name, evidence", [
    (R_PACKAGE, "retailr.zip", "lacks R/applicationTrainer.R and R/applicationScorer.R"),
    (R_PLATFORM, "recipe.zip", "has no R/ folder"),
])
def test_an_r_artifact_without_trainer_and_scorer_is_a_400(client, artifact, name, evidence):
    refused = _upload(client, {"name": "Retail", "type": "R"}, artifact, name)
    assert refused.status_code == 400, refused.text
    assert evidence in refused.json()["detail"]
    assert client.get("/engines").json()["children"] == []


@pytest.mark.parametrize("artifact, name, engine_type, language, evidence", [
    (SCALA_PROJECT, "retail.zip", "PySpark", "Scala", "JVM project: pom.xml"),
    (JAR, "retail.jar", "PySpark", "Scala", "a jar of compiled JVM classes"),
])
def test_a_scala_artifact_is_a_400_and_registers_nothing(client, artifact, name, engine_type,
                                                         language, evidence):
    refused = _upload(client, {"name": "Retail", "type": engine_type}, artifact, name)
    assert refused.status_code == 400, refused.text
    detail = refused.json()["detail"]
    assert f"does not run {language} recipes yet" in detail and evidence in detail
    assert "Python recipes (type Python" in detail and "PySpark recipes" in detail
    assert "R recipes (type R" in detail
    assert client.get("/engines").json()["children"] == []


@pytest.mark.parametrize("engine, language", [
    ({"name": "RetailScala", "type": "Spark", "mlLibrary": "databricks-spark"}, "Scala (Spark)"),
    ({"name": "RetailScala", "type": "Python", "language": ["Scala"]}, "Scala"),
])
def test_an_engine_of_type_spark_is_a_400(client, engine, language):
    refused = client.post("/engines", json=engine)
    assert refused.status_code == 400, refused.text
    assert f"does not run {language} recipes yet" in refused.json()["detail"]
    assert client.get("/engines").json()["children"] == []


def test_a_pyspark_engine_is_still_accepted(client):
    created = client.post("/engines", json={"name": "Noop", "type": "PySpark", "language": ["Python", "Scala"],
                                            "artifacts": {"default": {"image": {"location": "noop"}}}})
    assert created.status_code == 201, created.text


def test_an_engine_of_type_r_is_accepted_and_its_image_checked(client):
    created = client.post("/engines", json={"name": "RetailR", "type": "R"})
    assert created.status_code == 201, created.text
    image = client.post("/engines", json={"name": "RetailR", "type": "R", "artifacts": {
        "default": {"image": {"location": "retail.azurecr.io/retail-r:0.1"}}}})
    assert image.status_code == 400 and "retail.azurecr.io" in image.json()["detail"]
