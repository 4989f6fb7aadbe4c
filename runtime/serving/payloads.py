"""Request bodies in, answers out, inside a model host: MLflow's scoring server bodies (JSON with
`dataframe_split`, `dataframe_records`, `instances` or `inputs`, plus `params`; or `text/csv`),
the Open Inference Protocol v2's per-column tensors, casting to the model's declared input, and
the answers `{"predictions": ...}` and v2's `outputs`.

Every refusal is an MLRuntimeError with a 4xx status raised before the model runs; a message
names columns, rows and keys, never a value the client sent. pandas is imported when a body is
read, not at import (the warm parent imports this module).
"""
from __future__ import annotations

import json
import json.scanner
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from ..errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from . import columns as columns_
from .columns import missing_columns

if TYPE_CHECKING:
    import pandas as pd

MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
V2_KEYS = ("id", "inputs", "outputs", "parameters")
JSON_TYPES = ("application/json", "application/vnd.adobe.platform.sensei+json")
CSV_TYPES = ("text/csv", "application/csv")
SEND_THIS = ("send 'Content-Type: application/json' (a body with one of dataframe_split, "
             "dataframe_records, instances or inputs) or 'Content-Type: text/csv'")
_V2_TYPES = {"b": "BOOL", "i": "INT64", "u": "UINT64", "f": "FP64"}


@dataclass
class Limits:
    """What one request may carry (413 past either)."""

    max_rows: int = 100_000
    max_bytes: int = 64 << 20


@dataclass
class Parsed:
    frame: Any                        # pandas.DataFrame, or columns (runtime.serving.columns)
    params: dict[str, Any] = field(default_factory=dict)
    request_id: Optional[str] = None  # v2's "id", echoed back
    rows: int = 0


def media(content_type: str) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse(body: bytes, content_type: str, protocol: str, limits: Limits,
          schema: Optional[dict[str, str]] = None, required: tuple[str, ...] = (),
          columns: bool = False) -> Parsed:
    """The request's rows as a frame, cast to `schema`, `required` columns checked; with
    `columns`, as typed numpy columns (a small MLflow body never becomes a frame)."""
    if len(body) > limits.max_bytes:
        raise PayloadTooLarge(f"The request body of {len(body)} bytes is over the limit of "
                              f"{limits.max_bytes} bytes")
    kind = media(content_type)
    if protocol == "v2":
        if kind not in JSON_TYPES and kind != "":
            raise UnsupportedMediaType(f"Unsupported content type {content_type!r}: the inference "
                                       "protocol takes 'Content-Type: application/json'")
        parsed = _parse_v2(_json(body), limits)
    elif kind in JSON_TYPES:
        doc = _json(body)
        if columns:
            small = _small_mlflow(doc, limits, schema or {}, required)
            if small is not None:
                return small
        parsed = _parse_mlflow(doc, limits, schema)
    elif kind in CSV_TYPES:
        parsed = Parsed(_parse_csv(body, limits))
    else:
        raise UnsupportedMediaType(f"Unsupported content type {content_type or 'none'!r}: "
                                   + SEND_THIS)
    parsed.frame = conform(parsed.frame, schema, required)
    parsed.rows = len(parsed.frame)
    if columns:
        parsed.frame = columns_.from_frame(parsed.frame)
    return parsed


def _small_mlflow(doc: Any, limits: Limits, schema: dict[str, str],
                  required: tuple[str, ...]) -> Optional[Parsed]:
    """A small body of records or dataframe_split cast in Python (runtime.serving.columns); None
    for anything else, which the pandas path reads (and refuses) as it always has."""
    if type(doc) is not dict:
        return None
    keys = [k for k in doc if k != "params"]
    if len(keys) != 1 or keys[0] not in MLFLOW_KEYS:
        return None
    key, value = keys[0], doc[keys[0]]
    params = doc.get("params") or {}
    if not isinstance(params, dict):
        return None
    if key == "dataframe_split":
        if type(value) is not dict or set(value) - {"columns", "data", "index"} \
                or type(value.get("data")) is not list:
            return None
        width = len(value["columns"]) if isinstance(value.get("columns"), list) else -1
        if any(type(row) is not list or len(row) != width for row in value["data"]):
            return None
        count = len(value["data"])
    elif type(value) is list:
        count = len(value)
    else:
        return None
    if count > columns_.SMALL_ROWS:
        return None
    _rows_checked(count, limits)
    table = columns_.small_table(key, value)
    if table is None:
        return None
    try:
        cast = columns_.cast_columns(*table, schema, required)
    except columns_.Slow:
        return None
    return Parsed(cast, params, rows=count)


_scan = json.scanner.make_scanner(json.JSONDecoder())


def _json(body: bytes) -> Any:
    if not body.strip():
        raise BadRequest("The request body is empty: " + SEND_THIS)
    try:   # UTF-8 with nothing around the value, the usual body: without json.loads' encoding
        text = body.decode()   # sniffing and whitespace matches (a third of a small body's time)
        value, end = _scan(text, 0)
        if end == len(text):
            return value
    except (ValueError, StopIteration, AttributeError):   # AttributeError: a str body
        pass   # json.loads decides, and names what is wrong
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Malformed JSON body ({type(exc).__name__} at "
                         f"{_where(exc)})") from None


def _where(exc: Exception) -> str:
    pos = getattr(exc, "pos", None)
    return f"character {pos}" if pos is not None else "its start"


def _rows_checked(count: int, limits: Limits) -> None:
    if count > limits.max_rows:
        raise PayloadTooLarge(f"The request has {count} rows, over the limit of "
                              f"{limits.max_rows} rows per request")
    if count == 0:
        raise BadRequest("The request has no rows")


def _parse_mlflow(doc: Any, limits: Limits, schema: Optional[dict[str, str]]) -> Parsed:
    import pandas as pd

    if not isinstance(doc, dict):
        raise BadRequest("The body must be a JSON object with one of "
                         f"{', '.join(MLFLOW_KEYS)} (and optionally params)")
    unknown = [k for k in doc if k not in MLFLOW_KEYS and k != "params"]
    if unknown:
        raise BadRequest(f"Unknown key {unknown[0]!r} in the body; accepted: "
                         f"{', '.join(MLFLOW_KEYS)}, and params")
    given = [k for k in MLFLOW_KEYS if k in doc]
    if len(given) != 1:
        raise BadRequest(f"The body needs exactly one of {', '.join(MLFLOW_KEYS)}; it has "
                         f"{', '.join(given) if given else 'none'}")
    params = doc.get("params") or {}
    if not isinstance(params, dict):
        raise BadRequest("params must be a JSON object of parameter names and values")
    key = given[0]
    value = doc[key]
    if key == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("data"), list):
            raise BadRequest("dataframe_split must be an object with columns and data "
                             "(a list of rows), as pandas' to_dict(orient='split') writes")
        extra = [k for k in value if k not in ("columns", "data", "index")]
        if extra:
            raise BadRequest(f"Unknown key {extra[0]!r} in dataframe_split; accepted: columns, "
                             "data, index")
        data, columns = value["data"], value.get("columns")
        _rows_checked(len(data), limits)
        if columns is not None:
            if not isinstance(columns, list):
                raise BadRequest("dataframe_split.columns must be a list of column names")
            for i, row in enumerate(data):
                if not isinstance(row, list) or len(row) != len(columns):
                    raise BadRequest(f"dataframe_split.data row {i} has "
                                     f"{len(row) if isinstance(row, list) else 'no list of'} "
                                     f"values for {len(columns)} columns")
        return Parsed(pd.DataFrame(data, columns=columns), params)
    if key == "dataframe_records":
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            raise BadRequest("dataframe_records must be a list of objects, one per row "
                             "(pandas' to_dict(orient='records'))")
        _rows_checked(len(value), limits)
        return Parsed(pd.DataFrame(value), params)
    # instances / inputs: records, columns (an object of lists), or rows of values
    if isinstance(value, dict):
        lengths = {len(v) if isinstance(v, list) else 1 for v in value.values()}
        if len(lengths) > 1:
            raise BadRequest(f"{key} as columns: every column needs the same number of values")
        count = lengths.pop() if lengths else 0
        _rows_checked(count, limits)
        return Parsed(pd.DataFrame({k: v if isinstance(v, list) else [v]
                                    for k, v in value.items()}), params)
    if not isinstance(value, list):
        raise BadRequest(f"{key} must be a list of rows or an object of columns")
    _rows_checked(len(value), limits)
    if all(isinstance(r, dict) for r in value):
        return Parsed(pd.DataFrame(value), params)
    if all(isinstance(r, list) for r in value):
        columns = list(schema) if schema else None
        if columns is not None and any(len(r) != len(columns) for r in value):
            raise BadRequest(f"{key} rows given as lists need one value per input column "
                             f"({', '.join(columns)})")
        return Parsed(pd.DataFrame(value, columns=columns), params)
    if not any(isinstance(r, (list, dict)) for r in value):
        return Parsed(pd.DataFrame({0: value}), params)
    raise BadRequest(f"{key} mixes rows of different shapes: give every row as an object, or "
                     "every row as a list")


def _parse_csv(body: bytes, limits: Limits) -> Any:
    import io

    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(body))
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise BadRequest(f"Malformed CSV body: {type(exc).__name__}") from None
    _rows_checked(len(frame), limits)
    return frame


def _parse_v2(doc: Any, limits: Limits) -> Parsed:
    import pandas as pd

    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise BadRequest("The inference request needs inputs: a list of {name, shape, datatype, "
                         "data}, one per column")
    unknown = [k for k in doc if k not in V2_KEYS]
    if unknown:
        raise BadRequest(f"Unknown key {unknown[0]!r} in the inference request; accepted: "
                         f"{', '.join(V2_KEYS)}")
    columns: dict[str, list[Any]] = {}
    for i, tensor in enumerate(doc["inputs"]):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str) \
                or not isinstance(tensor.get("data"), list):
            raise BadRequest(f"inputs[{i}] needs a name and data (a list)")
        data = tensor["data"]
        if data and isinstance(data[0], list):   # [[v], [v]] of shape [n, 1]
            data = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in data]
        columns[tensor["name"]] = data
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise BadRequest("Every input (a table's column) needs the same number of values")
    _rows_checked(lengths.pop(), limits)
    params = doc.get("parameters") if isinstance(doc.get("parameters"), dict) else {}
    request_id = doc.get("id") if isinstance(doc.get("id"), str) else None
    return Parsed(pd.DataFrame(columns), params, request_id)


# --- the model's declared input ----------------------------------------------------------------

def conform(frame: Any, schema: Optional[dict[str, str]], required: tuple[str, ...]) -> Any:
    """The frame with declared columns cast to their kind; a 400 naming a missing required column,
    or the column and row of the first value that does not cast (never the value)."""
    if required:
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise missing_columns(missing, schema)
    if not schema:
        return frame
    for column, kind in schema.items():
        if column in frame.columns:
            frame[column] = _cast(frame[column], column, kind)
    return frame


def _cast(series: Any, column: str, kind: str) -> Any:
    import pandas as pd

    if kind in ("number", "integer"):
        if series.dtype.kind in "iuf" and series.dtype.kind != "b":
            cast = series
        else:
            cast = pd.to_numeric(series.where(series.map(_not_bool), None), errors="coerce")
        _refuse(series, cast, column, "a number")
        if kind == "integer":
            fractional = cast.notna() & (cast != cast.round())
            _refuse_rows(fractional, column, "a whole number")
        return cast
    if kind == "boolean":
        if series.dtype.kind == "b":
            return series
        cast = series.map(_flag)
        _refuse(series, cast, column, "true or false")
        return cast
    if kind == "datetime":
        if series.dtype.kind == "M":
            return series
        strings = series.where(series.map(lambda v: isinstance(v, str) or v is None), None)
        cast = pd.to_datetime(strings, errors="coerce", format="mixed")
        _refuse(series, cast, column, "a date or timestamp (ISO 8601)")
        return cast
    if kind == "string":
        return series.where(series.isna(), series.astype(str))
    return series


def _not_bool(value: Any) -> bool:
    return not isinstance(value, bool)


_FLAGS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _flag(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return _FLAGS.get(value.strip().lower(), _BAD)
    try:
        import math

        if isinstance(value, float) and math.isnan(value):
            return None
    except TypeError:
        pass
    return _BAD


_BAD = object()


def _refuse(original: Any, cast: Any, column: str, what: str) -> None:
    if cast.dtype == object:
        bad = cast.map(lambda v: v is _BAD)
    else:
        bad = cast.isna() & original.notna()
    _refuse_rows(bad, column, what)


def _refuse_rows(bad: Any, column: str, what: str) -> None:
    if bool(bad.any()):
        row = int(bad.to_numpy().nonzero()[0][0])
        raise BadRequest(f"Column {column!r}, row {row} (counting from 0): the value is not "
                         f"{what}")


# --- answers -----------------------------------------------------------------------------------

def mlflow_answer(result: Any) -> bytes:
    """`{"predictions": ...}` as MLflow's scoring server writes it: a frame as records, a
    series or array as a list."""
    return b'{"predictions":' + _json_values(result) + b"}"


def _json_values(result: Any) -> bytes:
    if isinstance(result, dict):   # columns (runtime.serving.columns)
        return columns_.json_values(result)
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        return result.to_json(orient="records", date_format="iso").encode()
    if isinstance(result, pd.Series):
        return result.to_json(orient="values", date_format="iso").encode()
    if hasattr(result, "tolist"):
        return json.dumps(result.tolist(), default=str).encode()
    return json.dumps(result, default=str).encode()


def v2_answer(result: Any, model_name: str, model_version: str,
              request_id: Optional[str]) -> bytes:
    """The inference protocol's response: one output per column of the result."""
    import pandas as pd

    if isinstance(result, dict):   # columns
        result = pd.DataFrame(result)
    if not isinstance(result, pd.DataFrame):
        result = pd.DataFrame({"prediction": list(result)}) if not isinstance(result, pd.Series) \
            else result.to_frame(result.name or "prediction")
    outputs = []
    for name in result.columns:
        series = result[name]
        kind = series.dtype.kind
        if kind == "M":
            data = [None if pd.isna(v) else v.isoformat() for v in series]
            datatype = "BYTES"
        else:
            datatype = _V2_TYPES.get(kind, "BYTES")
            data = series.astype(object).where(series.notna(), None).tolist()
            if datatype == "BYTES":
                data = [None if v is None else str(v) for v in data]
        outputs.append({"name": str(name), "shape": [len(series)], "datatype": datatype,
                        "data": data})
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version,
                           "outputs": outputs}
    if request_id is not None:
        doc["id"] = request_id
    return json.dumps(doc, separators=(",", ":"), default=str).encode()


def split_rows(result: Any, counts: list[int]) -> list[Any]:
    """A batch's result cut back into its requests' parts, in order."""
    if isinstance(result, dict):
        return columns_.split(result, counts)
    out, start = [], 0
    for n in counts:
        if hasattr(result, "iloc"):
            out.append(result.iloc[start:start + n])
        else:
            out.append(result[start:start + n])
        start += n
    return out


def row_count(result: Any) -> Optional[int]:
    if isinstance(result, dict):
        return columns_.rows_of(result)
    try:
        return len(result)
    except TypeError:
        return None


# A model's input schema (a column -> its JSON type) as v2's tensor datatypes.
_V2_SCHEMA_TYPES = {"number": "FP64", "integer": "INT64", "boolean": "BOOL", "string": "BYTES",
                    "datetime": "BYTES"}


def v2_metadata(name: str, info: dict) -> dict:
    """v2's model metadata (`GET /v2/models/{name}`) from a model host's description."""
    schema = info.get("inputSchema") or {}
    doc = {"name": name, "versions": [str(info.get("version"))], "platform": "mlinstance-runtime",
           "modelId": info.get("modelId"),
           "inputs": [{"name": column, "datatype": _V2_SCHEMA_TYPES.get(kind, "BYTES"),
                       "shape": [-1]} for column, kind in schema.items()],
           "outputs": []}
    if info.get("slow"):   # why every request to this model is slow
        doc["parameters"] = {"slow": info["slow"]}
    return doc
