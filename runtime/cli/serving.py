"""`run serve-model TARGET --port P` and `run predict TARGET -i rows.json|rows.csv`: online
scoring of an MLService's published Model or a Model (runtime.serving)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Only argparse at import: `run --help` builds these parsers.


def add_parsers(sub: argparse._SubParsersAction, common) -> None:
    serve = sub.add_parser("serve-model", help="serve one MLService's published Model (following "
                                               "its publications) or one Model online")
    serve.add_argument("target", metavar="SERVICE|MODEL", help="an MLService id or a Model id")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    _options(serve)
    common(serve)
    serve.set_defaults(handler="runtime.cli.serving:serve_model")

    predict = sub.add_parser("predict", help="score a file's rows online with an MLService's "
                                             "published Model or a Model")
    predict.add_argument("target", metavar="SERVICE|MODEL", help="an MLService id or a Model id")
    predict.add_argument("-i", "--input", required=True, metavar="FILE",
                         help="rows.json (an MLflow body or a list of records) or rows.csv")
    _options(predict)
    common(predict)
    predict.set_defaults(handler="runtime.cli.serving:predict")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-batch-rows", type=int, default=1024,
                        help="rows a micro-batch may hold (default 1024)")
    parser.add_argument("--batch-wait-ms", type=float, default=0.0,
                        help="wait this long for more requests before a batch (default 0)")
    parser.add_argument("--no-batching", action="store_true", help="one request per batch")
    parser.add_argument("--max-queue", type=int, default=256,
                        help="requests a host queues before it answers 503 (default 256)")
    parser.add_argument("--timeout-s", type=float, default=30.0,
                        help="a request not scored this long after it arrived is answered 504 "
                             "(default 30)")
    parser.add_argument("--max-rows", type=int, default=100_000,
                        help="rows a request may carry (413 past it; default 100000)")
    parser.add_argument("--max-bytes", type=int, default=16 << 20,
                        help="bytes a request body may carry (413 past it; default 16 MiB)")
    parser.add_argument("--capture", action="store_true",
                        help="write each request's payload into the request log")


def _serving_options(args: argparse.Namespace):
    from ..serving.hosts import ServingOptions

    return ServingOptions(max_batch_rows=args.max_batch_rows, batch_wait_ms=args.batch_wait_ms,
                          batching=not args.no_batching, max_queue=args.max_queue,
                          timeout_s=args.timeout_s, max_rows=args.max_rows,
                          max_bytes=args.max_bytes, capture=args.capture)


def _registry_and_caller(args: argparse.Namespace):
    from ..home import resolve_home
    from ..registry import Caller, Registry

    registry = Registry.open(resolve_home(args.home))
    return registry, Caller.local(org=args.org, sandbox=args.sandbox)


def serve_model(args: argparse.Namespace) -> int:
    from ..api.auth import check_bind
    from ..serving import http_server
    from ..serving.standalone import ModelServer

    check_bind(args.host, {})
    registry, caller = _registry_and_caller(args)
    options = _serving_options(args)
    print(f"Serving {args.target} at http://{args.host}:{args.port}/invocations "
          f"(also /ping, /health, /version, /metrics, /v2/models/{args.target}/infer)",
          flush=True)
    try:
        http_server.run(ModelServer(registry, caller, args.target, options), args.host,
                        args.port, options.max_bytes)
    finally:
        registry.close()
    return 0


def predict(args: argparse.Namespace) -> int:
    from ..serving.standalone import predict_file

    registry, caller = _registry_and_caller(args)
    try:
        status, body = predict_file(registry, caller, args.target, Path(args.input),
                                    _serving_options(args))
    finally:
        registry.close()
    if status >= 400:
        doc = json.loads(body)
        print(f"error: {doc.get('title')}: {doc.get('detail')}", file=sys.stderr)
        return 1
    sys.stdout.write(body.decode() + "\n")
    return 0
