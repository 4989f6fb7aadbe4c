"""`run serve`: the Sensei-compatible REST API on this machine."""
from __future__ import annotations

import argparse
import os

from ..api.app import ServerSettings
from ..api.server import parse_tokens, serve
from ..home import resolve_home


def main(args: argparse.Namespace) -> int:
    tokens = parse_tokens(args.token, args.tokens_file)
    settings = ServerSettings(home=resolve_home(args.home), tokens=tokens,
                              max_body_bytes=int(args.max_body_mb * (1 << 20)),
                              execute_runs=not args.no_execute, data_roots=args.data_root,
                              backend_options=({"pyspark": {"master": args.spark_master}}
                                               if args.spark_master else {}),
                              # e.g. "ray" (with RAY_ADDRESS): API runs become Ray jobs
                              run_backend=args.run_backend
                              or os.environ.get("MLRUNTIME_RUN_BACKEND") or None)
    serve(settings, args.host, args.port, args.log_level)
    return 0
