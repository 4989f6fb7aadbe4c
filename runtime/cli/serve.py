"""`run serve`: the Sensei-compatible REST API on this machine."""
from __future__ import annotations

import argparse
import os

from ..api.app import ServerSettings
from ..api.server import parse_tokens, serve
from ..backends import backend_options_from, cli_option_dests
from ..home import resolve_home


def main(args: argparse.Namespace) -> int:
    tokens = parse_tokens(args.token, args.tokens_file)
    # The archive caps are read where archives are unpacked (runtime.artifacts.archive_limits).
    from ..artifacts import ENV_MAX_ARCHIVE_ENTRIES, ENV_MAX_UNPACKED_MB, archive_limits

    if args.max_unpacked_mb is not None:
        os.environ[ENV_MAX_UNPACKED_MB] = str(args.max_unpacked_mb)
    if args.max_archive_entries is not None:
        os.environ[ENV_MAX_ARCHIVE_ENTRIES] = str(args.max_archive_entries)
    archive_limits()   # a bad value stops the server here, not at the first upload
    settings = ServerSettings(home=resolve_home(args.home), tokens=tokens,
                              max_body_bytes=int(args.max_body_mb * (1 << 20)),
                              execute_runs=not args.no_execute, data_roots=args.data_root,
                              backend_options=backend_options_from(
                {d: getattr(args, d, None) for d in cli_option_dests()}),
                              # e.g. "ray" (with RAY_ADDRESS): API runs become Ray jobs
                              run_backend=args.run_backend
                              or os.environ.get("MLRUNTIME_RUN_BACKEND") or None,
                              grace_s=args.grace, max_concurrent_runs=args.max_concurrent_runs,
                              warm=args.warm)
    serve(settings, args.host, args.port, args.log_level)
    return 0
