"""Each file format as the reader and the writer handle it: Parquet (a file or a folder read as one
pyarrow dataset; `_`-prefixed struct columns flattened to dotted names and nested again when
written), CSV (pyarrow's streaming reader typing columns as pd.read_csv does) and JSON lines (a
batch of records at a time, `_`-prefixed objects flattened and nested). See runtime.datasets'
docstring for the XDM shape.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional

from .errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

# pd.read_csv's default missing-value strings, so that pyarrow reads as pandas does.
_CSV_NULLS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
              "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
# A CSV column whose later rows do not fit the type inferred from the first block is read again
# with the next wider type (pd.read_csv, which sees the whole file, would have chosen it).
_CSV_WIDER = {"null": "int64", "int64": "double", "bool": "string", "double": "string"}
_CSV_CONVERSION = re.compile(r"CSV column #(\d+): CSV conversion error to (\w+)")


def unreadable(path: Path, what: str, exc: BaseException) -> ConfigError:
    """A data file the parser refused, named with the parser's error class and (when it says one)
    the line, never the parser's message: that may quote the file's content, which a shared server
    must not hand to a user who named a file they may not read."""
    line = re.search(r"\bline (\d+)", str(exc))
    return ConfigError(f"Cannot read {what} data set {path}: {type(exc).__name__}"
                       + (f" at line {line.group(1)}" if line else ""))


def read_file(path: Path, fmt: str) -> pd.DataFrame:
    import pandas as pd

    if fmt == "parquet":
        return _read_parquet(path)
    if fmt == "csv":
        try:
            return pd.read_csv(path)
        except Exception as exc:
            raise unreadable(path, "CSV", exc) from None
    if fmt == "jsonl":
        return _read_jsonl(path)
    raise ConfigError(f"Cannot read {path}: unknown format {fmt!r}")


# --- Parquet -------------------------------------------------------------------------------------

def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(str(path))
    except Exception as exc:  # pyarrow's own errors: say which file
        raise unreadable(path, "Parquet", exc) from None
    if any(_is_struct(field.type) and field.name.startswith("_") for field in table.schema):
        table = flatten_structs(table)
    return table.to_pandas()


def _is_struct(arrow_type: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_struct(arrow_type)


def flatten_structs(table: Any) -> Any:
    """`_`-prefixed struct columns replaced by their fields, named `parent.child`, recursively."""
    import pyarrow as pa

    names, arrays = [], []

    def add(name: str, column: Any) -> None:
        if _is_struct(column.type) and name.split(".", 1)[0].startswith("_"):
            children = column.flatten()
            for i, child in enumerate(children):
                add(f"{name}.{column.type[i].name}", child)
        else:
            names.append(name)
            arrays.append(column)

    for i, name in enumerate(table.column_names):
        add(name, table.column(i))
    return pa.Table.from_arrays(arrays, names=names)


def parquet_dataset(path: Path) -> Any:
    import pyarrow.dataset as ds

    try:
        if path.is_dir():   # as pq.read_table reads a folder: hive partitions, as dictionaries
            return ds.dataset(str(path), format="parquet",
                              partitioning=ds.HivePartitioning.discover(infer_dictionary=True))
        return ds.dataset(str(path), format="parquet")
    except Exception as exc:
        raise unreadable(path, "Parquet", exc) from None


def flat_fields(schema: Any) -> dict[str, tuple[tuple[str, ...], Any]]:
    """Flattened column name -> (field path, type), flattening `_`-prefixed structs as
    flatten_structs does."""
    out: dict[str, tuple[tuple[str, ...], Any]] = {}

    def add(name: str, path: tuple[str, ...], arrow_type: Any) -> None:
        if _is_struct(arrow_type) and name.split(".", 1)[0].startswith("_"):
            for i in range(arrow_type.num_fields):
                child = arrow_type.field(i)
                add(f"{name}.{child.name}", path + (child.name,), child.type)
        else:
            out[name] = (path, arrow_type)

    for field in schema:
        add(field.name, (field.name,), field.type)
    return out


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if _xdm_groups(frame.columns):
        table = nested_table(frame)
    else:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, str(path), compression="snappy")


def nested_table(frame: pd.DataFrame) -> Any:
    import pyarrow as pa

    flat = pa.Table.from_pandas(frame, preserve_index=False)
    index = {name: i for i, name in enumerate(flat.column_names)}

    def build(node: Any) -> Any:
        if not isinstance(node, dict):
            return flat.column(index[str(node)]).combine_chunks()
        names = list(node)
        children = [build(node[n]) for n in names]
        return pa.StructArray.from_arrays(children, names=[str(n) for n in names])

    tree = _group_tree(frame.columns)
    return pa.Table.from_arrays([build(v) if isinstance(v, dict) else flat.column(index[str(v)])
                                 for v in tree.values()], names=[str(k) for k in tree])


def _group_tree(columns: Iterable[Any]) -> dict[str, Any]:
    """{'_t': {'a': 'col _t.a', 'b': {...}}, 'x': 'x'} from dotted column names (XDM only)."""
    tree: dict[str, Any] = {}
    for column in columns:
        parts = column.split(".") if isinstance(column, str) and column.startswith("_") else [column]
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"Column {column!r} nests under {part!r}, which is also a "
                                  "column of its own: XDM columns cannot be both")
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError(f"Column {column!r} is also the parent of other columns")
        node[parts[-1]] = column
    return tree


def _xdm_groups(columns: Iterable[Any]) -> bool:
    return any(isinstance(c, str) and c.startswith("_") and "." in c.strip(".") for c in columns)


# --- CSV -----------------------------------------------------------------------------------------

class ReadAgain(Exception):
    """A CSV column turned out to be text after batches typed otherwise were handed out (see
    scan_dataset's `exact_types`): scan again with `column_types`."""

    def __init__(self, column_types: dict[str, Any]) -> None:
        super().__init__("a CSV column is text after all: read again with its type known")
        self.column_types = column_types


def _open_csv(path: Path, types: dict[str, Any], block_bytes: int,
              include: Optional[list[str]] = None) -> Any:
    """pyarrow's streaming CSV reader, typing as pd.read_csv does: its missing-value strings, its
    true/false spellings, and dates left as text (pyarrow would infer date and timestamp types)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    def reader(column_types: dict[str, Any]) -> Any:
        return pcsv.open_csv(
            str(path), read_options=pcsv.ReadOptions(block_size=block_bytes),
            convert_options=pcsv.ConvertOptions(
                column_types=column_types, include_columns=include or [],
                null_values=_CSV_NULLS, strings_can_be_null=True,
                true_values=["True", "TRUE", "true"], false_values=["False", "FALSE", "false"]))

    opened = reader(types)
    temporal = {f.name: pa.string() for f in opened.schema if f.name not in types and (
        pa.types.is_temporal(f.type))}
    if temporal:
        opened.close()
        types.update(temporal)
        opened = reader(types)
    return opened


def _csv_block_bytes(path: Path, batch_rows: int) -> int:
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    row_bytes = max(16, len(head) // max(1, head.count(b"\n")))
    return int(min(256 << 20, max(64 << 10, row_bytes * batch_rows)))


def csv_header(path: Path) -> list[str]:
    import csv

    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return next(csv.reader(fh), [])
    except (OSError, ValueError, csv.Error) as exc:
        raise unreadable(path, "CSV", exc) from None


def scan_csv(path: Path, batch_rows: int, include: Optional[list[str]] = None,
              known_types: Optional[dict[str, Any]] = None,
              exact_types: bool = False) -> Iterator[pd.DataFrame]:
    """`include`: the columns to convert (all when None); each must be in the header."""
    import pyarrow as pa

    block = _csv_block_bytes(path, batch_rows)
    names = csv_header(path)   # conversion errors name a column by its place in the file
    types: dict[str, Any] = {k: pa.type_for_alias(v) if isinstance(v, str) else v
                             for k, v in (known_types or {}).items() if k in names}
    done = 0   # rows already yielded: a re-read with wider types goes on after them
    while True:
        kinds: dict[str, str] = {}
        reader = None
        try:
            reader = _open_csv(path, types, block, include)
            kinds = {f.name: str(f.type) for f in reader.schema}
            at = 0
            yielded = done > 0
            for batch in reader:
                start = at
                at += batch.num_rows
                if at <= done and batch.num_rows:
                    continue
                if start < done:
                    batch = batch.slice(done - start)
                done = at
                if batch.num_rows or not yielded:
                    yielded = True
                    yield _csv_frame(batch)
            if not yielded:   # a header and no rows
                yield _csv_frame(pa.RecordBatch.from_pylist([], schema=reader.schema))
            return
        except pa.ArrowInvalid as exc:
            match = _CSV_CONVERSION.search(str(exc))
            column = names[int(match.group(1))] if match and int(match.group(1)) < len(names) \
                else None
            wider = _CSV_WIDER.get(kinds.get(column, "")) if column else None
            if column is None or wider is None:
                raise unreadable(path, "CSV", exc) from None
            types[column] = pa.type_for_alias(wider)
            if exact_types and done and wider == "string":
                raise ReadAgain({**(known_types or {}), **types}) from None
        except (pa.ArrowException, OSError) as exc:
            raise unreadable(path, "CSV", exc) from None
        finally:
            # the reader reads ahead on Arrow's threads: closed here, when the scan ends, fails or
            # is left early, not whenever the collector reaches it (an exception's traceback keeps
            # this frame alive), at worst in the interpreter's teardown, where Arrow can abort
            if reader is not None:
                reader.close()


def _csv_frame(batch: Any) -> pd.DataFrame:
    """A CSV batch as pd.read_csv would have typed it: an empty column is float NaN, a missing
    value in a text or flag column is NaN, not None."""
    import numpy as np
    import pyarrow as pa

    frame = pa.Table.from_batches([batch]).to_pandas()
    for field in batch.schema:
        if pa.types.is_null(field.type):
            frame[field.name] = np.full(len(frame), np.nan)
        elif frame[field.name].dtype == object and batch.column(field.name).null_count:
            frame[field.name] = frame[field.name].where(frame[field.name].notna(), np.nan)
    return frame


# --- JSON lines ----------------------------------------------------------------------------------

def _read_jsonl(path: Path) -> pd.DataFrame:
    """JSON lines (or one JSON array of records) with JSON's own types: strings stay strings
    (dates included: recipes parse them themselves, as on the platform), `_`-prefixed objects
    become dotted columns in the order their fields appear."""
    return next(scan_jsonl(path, 2**62))     # one batch: the whole file


def _jsonl_records(path: Path) -> Iterator[dict[str, Any]]:
    """The flat records of a JSON lines file (or of one JSON array of records)."""
    with open(path, encoding="utf-8") as fh:
        head = fh.read(1)
        while head and head.isspace():
            head = fh.read(1)
        fh.seek(0)
        items = json.load(fh) if head == "[" else (json.loads(line) for line in fh if line.strip())
        for number, item in enumerate(items, 1):
            if not isinstance(item, dict):
                raise ValueError(f"line {number} is a {type(item).__name__}, not an object")
            yield _flat_record(item)


def _flat_record(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    if not prefix and not any(isinstance(v, dict) and k.startswith("_") for k, v in record.items()):
        return record
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and (prefix or key.startswith("_")):
            out.update(_flat_record(value, name + "."))
        else:
            out[name] = value
    return out


def scan_jsonl(path: Path, batch_rows: int) -> Iterator[pd.DataFrame]:
    """JSON lines `batch_rows` records at a time (one JSON array is read whole, then sliced)."""
    import pandas as pd

    records: list[dict[str, Any]] = []
    yielded = False
    try:
        for record in _jsonl_records(path):
            records.append(record)
            if len(records) >= batch_rows:
                frame, records = pd.DataFrame(records), []
                yielded = True
                yield frame
    except (OSError, ValueError) as exc:
        raise unreadable(path, "JSON lines", exc) from None   # its message may quote the file
    if records or not yielded:
        yield pd.DataFrame(records)


def write_jsonl(frame: pd.DataFrame, path: Path) -> None:
    if _xdm_groups(frame.columns):
        tree = _group_tree(frame.columns)

        def build(node: Any) -> Any:   # an object column of dicts for each group
            if not isinstance(node, dict):
                return frame[node]
            import pandas as pd
            parts = {name: build(child) for name, child in node.items()}
            return pd.DataFrame(parts, index=frame.index).to_dict("records")

        import pandas as pd
        out = pd.DataFrame({name: build(node) for name, node in tree.items()}, index=frame.index)
    else:
        out = frame
    out.to_json(path, orient="records", lines=True, date_format="iso", date_unit="ms")
