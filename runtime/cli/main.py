"""The `run` command: a thin face over the service layer.

The parser is built from plain data; each command's module is imported only when that command
runs, so `run --help` stays fast (no FastAPI, torch, pyspark or ray at start-up).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable, Optional, Sequence

from .. import __version__
from ..errors import MLRuntimeError


def _warm_flags(parser: argparse.ArgumentParser, default: str) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--warm", action="store_const", const="warm", dest="warm",
                       help="fork the run from a warm parent, starting one for this home if none "
                            "runs (it waits $MLRUNTIME_WARM_IDLE_S, default 600 s, for the next "
                            f"runs); by default {default}")
    group.add_argument("--cold", action="store_const", const="cold", dest="warm",
                       help="start the run in a fresh interpreter")


def _recipe_options(parser: argparse.ArgumentParser) -> None:
    """--engine PATH, --env-manager, --pip: a recipe on disk, for runs and sweeps alike."""
    parser.add_argument("--engine", metavar="PATH", dest="engine_path",
                        help="run a recipe on disk (a source folder, zip, tar.gz, egg or wheel): "
                             "TARGET may then be the recipe's own tasks-array config file; an "
                             "edited recipe is the next version of its Engine")
    parser.add_argument("--env-manager", choices=["uv", "local"],
                        help="recipes: uv builds the recipe's own environment once (default, or "
                             "$MLRUNTIME_ENV_MANAGER); local runs it in this environment")
    parser.add_argument("--pip", action="append", metavar="REQ",
                        help="recipes: an extra requirement for the recipe's environment "
                             "(repeatable)")


def _common(parser: argparse.ArgumentParser, *, scope: bool = True) -> None:
    parser.add_argument("--home", help="runtime home (default: $MLRUNTIME_HOME or "
                                       "~/.mlinstance-runtime)")
    parser.add_argument("--db", metavar="URL",
                        help="the registry: postgresql://USER@HOST:PORT/DB or sqlite:///PATH "
                             "(default: $MLRUNTIME_DB, else the SQLite file in the home)")
    parser.add_argument("--artifacts", metavar="LOCATION",
                        help="where recipes and Models live: a folder every host mounts, or "
                             "s3://bucket/prefix (default: $MLRUNTIME_ARTIFACTS, else the home)")
    if scope:
        parser.add_argument("--sandbox", help="sandbox name (default: $MLRUNTIME_SANDBOX or prod)")
        parser.add_argument("--org", help="IMS org id (default: $MLRUNTIME_ORG or local)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument("--verbose", "-v", action="store_true", help="show tracebacks")


def _article(noun: str) -> str:
    """'an Engine', 'an MLInstance' (said em-el), 'a Model'."""
    if noun[:2].isupper():   # an initialism: the sound of its first letter's name
        return "an" if noun[0] in "AEFHILMNORSX" else "a"
    return "an" if noun[:1].lower() in "aeiou" else "a"


def _entity_commands(sub: argparse._SubParsersAction, name: str, kind: str, title: str,
                     bulk: Optional[tuple[str, str]] = None) -> None:
    parser = sub.add_parser(name, help=f"create, list, get, update and delete {title}s")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    create = actions.add_parser("create", help=f"register {_article(title)} {title} from a JSON or "
                                               "YAML file")
    create.add_argument("file", help=f"the {title} in the API's shape (.json, .yaml, .yml, - for stdin)")
    if kind == "engine":
        create.add_argument("--artifact", metavar="PATH",
                            help="the recipe: a source folder, a zip or tar.gz of one, an egg or a "
                                 "wheel (stored content-addressed, like a defaultArtifact upload)")
    _common(create)

    listing = actions.add_parser("list", help=f"list {title}s")
    listing.add_argument("--property", help="filter, e.g. 'name==retail,created>2024-01-01'")
    listing.add_argument("--orderby", help="sort fields, '-' for descending (default: created)")
    listing.add_argument("--start", default=None, help="first item (default 0)")
    listing.add_argument("--limit", default=None, help="page size, 1..100 (default 25)")
    _common(listing)

    get = actions.add_parser("get", help=f"show one {title}")
    get.add_argument("id", help=f"the {title}'s id")
    _common(get)

    update = actions.add_parser("update", help=f"overwrite a {title} with a JSON or YAML file")
    update.add_argument("id", help=f"the {title}'s id")
    update.add_argument("file", help=f"the whole {title} in the API's shape (.json, .yaml, .yml, "
                                     "- for stdin)")
    if kind == "engine":
        update.add_argument("--artifact", metavar="PATH",
                            help="a new recipe artifact: a new artifact version of the Engine")
    _common(update)

    delete = actions.add_parser("delete", help=f"delete a {title} (and what it owns)")
    delete.add_argument("id", nargs="?", help=f"the {title}'s id (or give --{bulk[0]})" if bulk
                        else f"the {title}'s id")
    if bulk:
        flag, field = bulk
        delete.add_argument(f"--{flag}", dest="bulk_value", metavar=field.upper(),
                            help=f"delete every {title} of this {field} instead")
    _common(delete)
    for p in (create, listing, get, update, delete):
        p.set_defaults(handler="runtime.cli.registry:main", kind=kind, bulk=bulk)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run", description="MLInstance Runtime: a local Sensei ML API registry and runner.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", help="serve the Sensei ML API under /data/sensei")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1; others need tokens)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    serve.add_argument("--token", action="append", default=[], metavar="TOKEN[=USER]",
                       help="accept this bearer token (repeatable); USER becomes createdBy.userId")
    serve.add_argument("--tokens-file", help="JSON or YAML file mapping token -> user id, or -> "
                       "{user, org, sandboxes} to limit the token to those")
    serve.add_argument("--data-root", action="append", default=[], metavar="DIR",
                       help="data sets are read and written only under DIR (repeatable; default: "
                            "$MLRUNTIME_DATA_ROOTS, else with tokens HOME/data, else anywhere)")
    serve.add_argument("--max-unpacked-mb", type=float, metavar="MB",
                       help="largest unpacked size of an uploaded archive (recipe or model) "
                            "(default: $MLRUNTIME_MAX_UNPACKED_MB, else 1024)")
    serve.add_argument("--max-archive-entries", type=int, metavar="N",
                       help="most entries in an uploaded archive (default: "
                            "$MLRUNTIME_MAX_ARCHIVE_ENTRIES, else 20000)")
    serve.add_argument("--max-body-mb", type=float, default=1.0,
                       help="largest JSON body in MiB (default 1)")
    serve.add_argument("--run-backend", metavar="NAME",
                       help="send API runs to this backend, e.g. ray with RAY_ADDRESS set "
                            "(default: $MLRUNTIME_RUN_BACKEND, else the dispatcher's choice)")
    serve.add_argument("--spark-master", metavar="URL",
                       help="Spark master for pyspark runs (default: $MLRUNTIME_SPARK_MASTER, "
                            "else local[N])")
    serve.add_argument("--grace", type=float, default=30.0, metavar="S",
                       help="on SIGTERM or Ctrl-C: seconds running runs may still finish before "
                            "they are aborted (default 30); a second signal aborts them at once")
    serve.add_argument("--max-concurrent-runs", type=int, metavar="N",
                       help="run at most N runs at once (default: $MLRUNTIME_MAX_CONCURRENT_RUNS, "
                            "else as many as the host's CPU slots, GPUs and memory allow)")
    serve.add_argument("--cold", action="store_const", const="cold", dest="warm",
                       help="start every python run in a fresh interpreter (default: fork runs "
                            "from warm parents, started on first use and stopped with the server)")
    serve.add_argument("--no-execute", action="store_true",
                       help="registry only: keep API-created runs PENDING instead of running them")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning",
                                                                "info", "debug"],
                       help="the server log's level (default info)")
    _common(serve, scope=False)
    serve.set_defaults(handler="runtime.cli.serve:main")

    for command, task in (("train", "train"), ("score", "score"), ("fp", "featurePipeline")):
        run = sub.add_parser(command, help=f"run the {task} task of an MLInstance")
        run.add_argument("target", metavar="TARGET",
                         help="an MLInstance id, or a JSON/YAML file in the API's MLInstance shape")
        run.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                         help="override a parameter (repeatable; wins over every other layer)")
        run.add_argument("--params", metavar="FILE", help="parameters from a JSON or YAML file")
        run.add_argument("--experiment", metavar="ID",
                         help="the Experiment to run in (default: the MLInstance's latest)")
        if command == "score":
            run.add_argument("--model", metavar="ID",
                             help="the Model to score with (default: the Experiment's latest)")
        else:
            run.set_defaults(model=None)
        _recipe_options(run)
        run.add_argument("--device", help="cpu, cuda or cuda:N (default: what the resources ask)")
        run.add_argument("--backend", help="force a backend (python-cpu, python-cuda, ...)")
        run.add_argument("--spark-master", metavar="URL",
                         help="Spark master for pyspark engines: local[N], local-cluster[n,c,mb], "
                              "spark://HOST:PORT, k8s://..., yarn (default: "
                              "$MLRUNTIME_SPARK_MASTER, else local[N] from the resources)")
        run.add_argument("--explain", action="store_true",
                         help="print every parameter's value and source layer, and the plan; "
                              "run nothing")
        run.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
        run.add_argument("--quiet", "-q", action="store_true",
                         help="print only the result: no log lines, no progress")
        _warm_flags(run, "a warm parent already running for this home (a server's, or one a "
                         "--warm run left) is used when there is one")
        _common(run)
        run.set_defaults(handler="runtime.cli.runs:main")

    sweep = sub.add_parser("sweep", help="a parameter sweep: many train runs of one MLInstance "
                                         "in one Experiment (grid or random)")
    sweep.add_argument("mode", nargs="?", choices=["train"], help="the task to sweep (train)")
    sweep.add_argument("target", nargs="?", metavar="TARGET",
                       help="an MLInstance id, or a JSON/YAML file in the API's MLInstance shape")
    sweep.add_argument("-p", "--param", action="append", metavar="KEY=VALUES",
                       help="a swept parameter: a,b,c | range(start,stop[,step]) | choice(a,b) | "
                            "uniform(lo,hi) | loguniform(lo,hi) | randint(lo,hi); one value is "
                            "a plain override (repeatable)")
    sweep.add_argument("--file", metavar="YAML", help="the sweep from a file: params (and "
                                                      "samples, seed, metric, mode, parallel)")
    sweep.add_argument("--samples", type=int, metavar="N",
                       help="random search: N trials, each parameter drawn at random")
    sweep.add_argument("--seed", type=int, metavar="S", help="the random search's seed (0)")
    sweep.add_argument("--parallel", type=int, metavar="K",
                       help="run at most K trials at once, each leasing its own CPU slots or "
                            "GPUs in the run queue (default 1)")
    sweep.add_argument("--metric", metavar="NAME", help="sort the results by this metric (MAPE)")
    sweep.add_argument("--mode", dest="order", choices=["min", "max"],
                       help="whether a smaller or a larger metric is better (default min)")
    sweep.add_argument("--experiment", metavar="ID",
                       help="the Experiment to run in (default: a new one for the sweep)")
    sweep.add_argument("--publish", metavar="SERVICE",
                       help="publish the best trial's Model (by --metric) to this MLService: its "
                            "scoring runs, and plain score runs, then use it")
    sweep.add_argument("--stop-early", metavar="RULE", choices=["median"],
                       help="median: stop a trial whose --metric at an epoch is worse than the "
                            "median of the completed trials at that epoch")
    sweep.add_argument("--resume", metavar="SWEEP_ID",
                       help="run the unfinished trials of an earlier sweep (DONE ones are kept)")
    _recipe_options(sweep)
    sweep.add_argument("--device", help="cpu, cuda or cuda:N for every trial")
    sweep.add_argument("--backend", help="force a backend (python-cpu, python-cuda, ...)")
    sweep.add_argument("--cold", action="store_const", const="cold", dest="warm",
                       help="start every trial in a fresh interpreter (default: trials are forked "
                            "from a warm parent the sweep starts and stops)")
    _common(sweep)
    sweep.set_defaults(handler="runtime.cli.sweep:main")

    submit = sub.add_parser("submit", help="run a task of an MLInstance as a job on a Ray cluster")
    submit.add_argument("mode", choices=["train", "score", "fp"], help="the task to run")
    submit.add_argument("target", metavar="TARGET",
                        help="an MLInstance id, or a JSON/YAML file in the API's MLInstance shape")
    submit.add_argument("--address", help="the cluster's Jobs API, http://HOST:8265 "
                                          "(default: $RAY_ADDRESS)")
    submit.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                        help="override a parameter (repeatable)")
    submit.add_argument("--params", metavar="FILE", help="parameters from a JSON or YAML file")
    submit.add_argument("--experiment", metavar="ID", help="the Experiment to run in")
    submit.add_argument("--model", metavar="ID", help="score: the Model to score with")
    submit.add_argument("--device", help="cpu, cuda or cuda:N")
    submit.add_argument("--follow", action="store_true", help="stream the job's log here")
    submit.add_argument("--working-dir", metavar="DIR",
                        help="folder uploaded with the job (default: the current one, less .git, "
                             "data and artifact folders)")
    submit.add_argument("--no-working-dir", action="store_true",
                        help="upload nothing: the cluster's installed runtime and engines run it")
    submit.add_argument("--pip", action="append", metavar="REQ",
                        help="a pip requirement or requirements .txt file for the job (repeatable)")
    submit.add_argument("--shared-artifacts", action="store_true",
                        help="the cluster sees this runtime home at the same path: the job writes "
                             "the run's artifacts in place (default: they come back in its log)")
    _common(submit)
    submit.set_defaults(handler="runtime.cli.submit:main")

    cancel = sub.add_parser("cancel", help="cancel a queued or running run, whoever runs it "
                                           "(a local worker, a Spark worker or a Ray job)")
    cancel.add_argument("run", metavar="RUN", help="the experiment run's id (latest: the newest)")
    _common(cancel)
    cancel.set_defaults(handler="runtime.cli.history:cancel_main")

    runs = sub.add_parser("runs", help="the run history: list runs, show one")
    run_actions = runs.add_subparsers(dest="action", metavar="ACTION", required=True)
    runs_list = run_actions.add_parser("list", help="list runs, newest first")
    runs_list.add_argument("--experiment", metavar="ID", help="only this Experiment's runs")
    runs_list.add_argument("--state", metavar="S", type=str.upper,
                           choices=["PENDING", "RUNNING", "RETRY", "DONE", "FAILED", "ABORTED"],
                           help="only runs in this state")
    runs_list.add_argument("--limit", type=int, default=25, help="at most this many (default 25)")
    runs_list.add_argument("--filter", metavar="EXPR", dest="search",
                           help="a search, in MLflow's syntax: \"metrics.MAPE < 0.05 and "
                                "params.learning_rate = '0.1' and attributes.state = 'DONE'\" "
                                "(also tags., system., LIKE, ILIKE, IN)")
    runs_list.add_argument("--sort", metavar="KEY", default="-created",
                           help="created, duration, metric.NAME, best.NAME, param.KEY or "
                                "system.NAME; - for descending (default -created)")
    _common(runs_list)
    runs_show = run_actions.add_parser("show", help="one run: state, durations, metrics, model, "
                                                    "parameters with their sources, owner")
    runs_show.add_argument("run", metavar="RUN", help="a run id, or latest")
    _common(runs_show)
    for p in (runs_list, runs_show):
        p.set_defaults(handler="runtime.cli.history:main")

    warm = sub.add_parser("warm", help="this home's warm workers (python parents runs are forked "
                                       "from, Spark workers pyspark runs go to): list or stop them")
    warm.add_argument("action", nargs="?", choices=["list", "stop"], default="list",
                      help="list the warm workers of both kinds (default) or stop them")
    _common(warm, scope=False)
    warm.set_defaults(handler="runtime.cli.warm:main")

    from .services import add_parser as add_services   # argparse only: no registry imported

    add_services(sub, _common)

    from .serving import add_parsers as add_serving   # argparse only: serving is imported later

    add_serving(sub, _common)

    gpus = sub.add_parser("gpus", help="the host's CUDA devices: index, name, memory used/total "
                                       "and the run holding each")
    _common(gpus, scope=False)
    gpus.set_defaults(handler="runtime.cli.gpus:main")

    logs = sub.add_parser("logs", help="print a run's worker log")
    logs.add_argument("run", metavar="RUN", help="a run id, or latest")
    logs.add_argument("--follow", "-f", action="store_true",
                      help="keep printing what the worker writes until the run ends")
    _common(logs)
    logs.set_defaults(handler="runtime.cli.history:logs_main")

    data = sub.add_parser("data", help="generate sample data sets")
    data_kinds = data.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    retail = data_kinds.add_parser("retail", help="synthetic weekly retail sales (the sample "
                                                  "recipe's schema)")
    retail.add_argument("--out", required=True, metavar="DIR",
                        help="folder to write into: all rows, the training file and the scoring "
                             "file (the last 30 weeks), each as CSV and Parquet")
    retail.add_argument("--seed", type=int, default=0,
                        help="random seed: the same seed writes the same rows (default 0)")
    retail.add_argument("--stores", type=int, default=45, metavar="N",
                        help="number of stores (default 45, as the sample data)")
    retail.add_argument("--weeks", type=int, default=143, metavar="N",
                        help="number of weeks from 2010-02-05 (default 143, as the sample data; "
                             "more than 32)")
    retail.add_argument("--json", action="store_true",
                        help="print the written files' paths as one JSON object")
    retail.add_argument("--verbose", "-v", action="store_true", help="show tracebacks")
    retail.set_defaults(handler="runtime.cli.runs:data_main")

    datasets = sub.add_parser("datasets", help="register, list and remove data set ids (the "
                                               "sandbox's catalog)")
    dataset_actions = datasets.add_subparsers(dest="action", metavar="ACTION", required=True)
    ds_add = dataset_actions.add_parser("add", help="register PATH (a file or folder, or a "
                                                    "file:// URI) as data set ID")
    ds_add.add_argument("id", metavar="ID", help="the data set id that parameters will name")
    ds_add.add_argument("path", metavar="PATH", help="a file or folder, or a file:// URI")
    ds_add.add_argument("--format", choices=["csv", "parquet", "jsonl", "json"],
                        help="the files' format (default: from the file name; a folder's files say)")
    ds_add.add_argument("--replace", action="store_true", help="re-register an id already in use")
    _common(ds_add)
    ds_list = dataset_actions.add_parser("list", help="list the sandbox's data sets")
    _common(ds_list)
    ds_rm = dataset_actions.add_parser("rm", help="forget data set ids (files are left in place)")
    ds_rm.add_argument("ids", metavar="ID", nargs="+", help="data set ids to forget")
    _common(ds_rm)
    for p in (ds_add, ds_list, ds_rm):
        p.set_defaults(handler="runtime.cli.datasets:main")

    envs = sub.add_parser("envs", help="list, build, remove and prune recipe environments")
    env_actions = envs.add_subparsers(dest="action", metavar="ACTION", required=True)
    env_list = env_actions.add_parser("list", help="the environments, most recently used first")
    _common(env_list, scope=False)
    env_list.set_defaults(handler="runtime.cli.envs:list_main")
    env_build = env_actions.add_parser("build", help="build (or find) a recipe's environment now")
    env_build.add_argument("recipe", nargs="?", metavar="RECIPE",
                           help="a recipe folder, wheel or egg (none: the profile alone)")
    env_build.add_argument("--profile", default="python",
                           help="the runtime profile: python (pandas 1.x image) or bare")
    env_build.add_argument("--pip", action="append", metavar="REQ",
                           help="an extra requirement or requirements .txt file (repeatable)")
    env_build.add_argument("--refresh", action="store_true",
                           help="resolve again even if this request was resolved recently")
    _common(env_build, scope=False)
    env_build.set_defaults(handler="runtime.cli.envs:build_main")
    env_rm = env_actions.add_parser("rm", help="remove environments by key (or unique prefix)")
    env_rm.add_argument("keys", metavar="KEY", nargs="+",
                        help="environment keys or unique prefixes (run envs list shows them)")
    _common(env_rm, scope=False)
    env_rm.set_defaults(handler="runtime.cli.envs:rm_main")
    env_prune = env_actions.add_parser("prune", help="remove least recently used environments "
                                                     "until the rest fit under a size cap")
    env_prune.add_argument("--max-size", metavar="SIZE",
                           help="the cap, e.g. 10G, 500M (default: $MLRUNTIME_ENVS_MAX_SIZE or 10G)")
    env_prune.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    _common(env_prune, scope=False)
    env_prune.set_defaults(handler="runtime.cli.envs:prune_main")

    db = sub.add_parser("db", help="the registry's database: copy it between stores")
    db_actions = db.add_subparsers(dest="action", metavar="ACTION", required=True)
    db_copy = db_actions.add_parser(
        "copy", help="copy a whole registry (every object, run, curve, schedule) between SQLite "
                     "and PostgreSQL, then compare the row counts")
    db_copy.add_argument("--from", dest="source", required=True, metavar="SRC",
                         help="a runtime home folder, sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    db_copy.add_argument("--to", dest="dest", required=True, metavar="DST",
                         help="the same kinds; an empty registry unless --force")
    db_copy.add_argument("--force", action="store_true",
                         help="replace what the destination's registry holds")
    db_copy.add_argument("--json", action="store_true", help="print JSON for scripts")
    db_copy.add_argument("--verbose", "-v", action="store_true", help="show tracebacks")
    db_copy.set_defaults(handler="runtime.cli.db:copy_main")

    _entity_commands(sub, "engines", "engine", "Engine")
    _entity_commands(sub, "instances", "mlInstance", "MLInstance", bulk=("engine", "engineId"))
    return parser


# Options whose values may start with '-' (`--orderby -created`): argparse would read such a value
# as an option, so it is attached (`--orderby=-created`) before parsing.
_DASH_VALUE_OPTIONS = ("--orderby",)


def _attach_dash_values(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        if items[i] in _DASH_VALUE_OPTIONS and i + 1 < len(items) and items[i + 1].startswith("-"):
            out.append(f"{items[i]}={items[i + 1]}")
            i += 2
            continue
        out.append(items[i])
        i += 1
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_attach_dash_values(sys.argv[1:] if argv is None else argv))
    if getattr(args, "db", None):
        from ..home import ENV_DB

        # Through the environment: every registry this process opens, and the processes it
        # starts (workers, warm parents, Spark workers), use the same store.
        os.environ[ENV_DB] = args.db
    if getattr(args, "artifacts", None):
        from ..artifact_store import ENV_ARTIFACTS

        os.environ[ENV_ARTIFACTS] = args.artifacts   # the same way, for the same reason
    module_name, _, func_name = args.handler.partition(":")
    handler: Callable[[argparse.Namespace], int] = getattr(
        importlib.import_module(module_name), func_name)
    try:
        return handler(args) or 0
    except MLRuntimeError as exc:
        if getattr(args, "verbose", False):
            raise
        print(f"error: {exc.title}: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
