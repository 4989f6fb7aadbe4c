"""Garbage for the online scoring routes (hypothesis): bodies shaped like MLflow's and v2's with
random values in random places, random JSON, random bytes, random content types. Whatever is
sent, the answer is never a 5xx: bad input is the client's to fix, and said so with a 4xx.
Imported by name by the serving tests (a unique module name)."""
from __future__ import annotations

import json
from typing import Callable

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = 120   # per route and server: a few seconds on a loaded 2-core machine

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
    st.sampled_from(["2012-04-06", "4/6/12", "2012-02-30", "0000-00-00", "true", "1e999",
                     "NaN", "", " 7 ", "2012-04-06T10:00:00+02:00", "99999-01-01",
                     "9999-12-31", "1066-10-14"]))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
CONTENT_TYPES = st.one_of(st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/csv", "application/csv",
     "application/vnd.adobe.platform.sensei+json", "", "text/plain", "application/x-www-form-urlencoded",
     "multipart/form-data; boundary=x", "application/json;;"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20).map(str.strip))


def _columns(names: list[str]) -> st.SearchStrategy:
    return st.lists(st.sampled_from(names) | st.text(max_size=6), max_size=5, unique=True)


# Values a column of each kind takes when a row is nearly right (so that the model runs).
VALID = {"number": st.floats(-1e7, 1e7) | st.integers(-10 ** 6, 10 ** 6),
         "integer": st.integers(-5, 50), "boolean": st.booleans(),
         "datetime": st.dates().map(lambda d: d.isoformat()) | st.sampled_from(
             ["2012-04-06", "2011-02-04", "4/6/12", "1900-01-01", "9999-01-01"]),
         "string": st.sampled_from(["A", "B", "C", " a ", ""])}


def rows_like(kinds: dict[str, str], required: list[str]) -> st.SearchStrategy:
    """Rows with every required column and some others, each value valid for its kind or, now
    and then, anything at all."""
    def value(kind: str) -> st.SearchStrategy:
        return st.one_of(VALID.get(kind, JSON), VALID.get(kind, JSON), VALID.get(kind, JSON), JSON)

    return st.fixed_dictionaries({name: value(kinds.get(name, "")) for name in required},
                                 optional={name: value(kind) for name, kind in kinds.items()
                                           if name not in required})


def mlflow_bodies(names: list[str], kinds: dict[str, str] | None = None,
                  required: list[str] | None = None) -> st.SearchStrategy:
    """MLflow scoring bodies with the model's column names (and others) and random values; with
    the model's column kinds, mostly rows that are nearly right."""
    record = st.dictionaries(st.sampled_from(names) | st.text(max_size=6), JSON, max_size=6)
    if kinds:
        record = st.one_of(rows_like(kinds, required or []), rows_like(kinds, required or []),
                           record)
    split = st.fixed_dictionaries({"columns": _columns(names) | JSON,
                                   "data": st.lists(st.lists(JSON, max_size=5) | JSON, max_size=4)},
                                  optional={"index": JSON, "extra": JSON})
    data = st.one_of(
        st.builds(lambda v: {"dataframe_records": v}, st.lists(record, max_size=4) | JSON),
        st.builds(lambda v: {"dataframe_split": v}, split | JSON),
        st.builds(lambda k, v: {k: v}, st.sampled_from(["instances", "inputs"]),
                  st.lists(record, max_size=4) | st.dictionaries(
                      st.sampled_from(names), st.lists(JSON, max_size=3) | JSON, max_size=4) | JSON))
    with_params = st.builds(lambda body, params: {**body, "params": params}, data, JSON)
    if not kinds:
        return st.one_of(data, with_params, JSON)
    rows = st.lists(rows_like(kinds, required or []), min_size=1, max_size=4)
    nearly = st.one_of(
        st.builds(lambda r: {"dataframe_records": r}, rows),
        st.builds(lambda r: {"instances": r}, rows),
        st.builds(lambda r: {"dataframe_split": {"columns": sorted({k for x in r for k in x}),
                                                 "data": [[x.get(k) for k in sorted(
                                                     {k for x in r for k in x})] for x in r]}},
                  rows))
    return st.one_of(nearly, nearly, nearly, data, with_params, JSON)


def v2_bodies(names: list[str]) -> st.SearchStrategy:
    tensor = st.fixed_dictionaries(
        {"name": st.sampled_from(names) | JSON, "data": st.lists(JSON, max_size=4) | JSON},
        optional={"shape": JSON, "datatype": st.sampled_from(["INT64", "FP64", "BYTES"]) | JSON})
    body = st.fixed_dictionaries({"inputs": st.lists(tensor, max_size=4) | JSON},
                                 optional={"id": JSON, "parameters": JSON, "outputs": JSON})
    return st.one_of(body, JSON)


def encoded(bodies: st.SearchStrategy) -> st.SearchStrategy:
    """(bytes, content type): mostly the body as JSON, sometimes raw bytes or CSV-ish text."""
    as_json = st.builds(lambda b: json.dumps(b, allow_nan=True).encode(), bodies)
    csv = st.builds(lambda rows: "\n".join(",".join(map(str, r)) for r in rows).encode(),
                    st.lists(st.lists(SCALARS, max_size=4), max_size=4))
    json_type = st.just("application/json")
    return st.one_of(st.tuples(as_json, json_type), st.tuples(as_json, json_type),
                     st.tuples(st.one_of(as_json, csv, st.binary(max_size=64)), CONTENT_TYPES))


def never_a_5xx(post: Callable[[bytes, str], httpx.Response],
                strategy: st.SearchStrategy) -> None:
    """Post what `strategy` draws; every answer a well-formed non-5xx, problem bodies for 4xx."""
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(sent: tuple[bytes, str]) -> None:
        body, content_type = sent
        answer = post(body, content_type)
        assert answer.status_code < 500, (body[:300], content_type, answer.status_code,
                                          answer.text[:500])
        if answer.status_code >= 400:
            problem = answer.json()
            assert problem["status"] == answer.status_code and problem["detail"], problem

    run()
