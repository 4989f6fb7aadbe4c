"""`run datasets add|list|rm`: the sandbox's data set catalog, in the local registry."""
from __future__ import annotations

import argparse
import json

from ..home import resolve_home
from ..registry import Caller, Registry


def main(args: argparse.Namespace) -> int:
    registry = Registry.open(resolve_home(args.home))
    caller = Caller.local(org=args.org, sandbox=args.sandbox)
    try:
        if args.action == "add":
            entry = registry.add_dataset(caller, args.id, args.path, args.format,
                                         replace=args.replace)
            if args.json:
                print(json.dumps(entry, indent=2))
            else:
                note = "" if entry["exists"] else " (does not exist yet: a run writing it creates it)"
                print(f"Registered data set {entry['id']} -> {entry['path']} "
                      f"({entry.get('format') or 'folder'}){note}")
        elif args.action == "list":
            entries = registry.list_datasets(caller)
            if args.json:
                print(json.dumps({"datasets": entries}, indent=2))
            else:
                rows = [("ID", "FORMAT", "EXISTS", "PATH")] + [
                    (e["id"], e.get("format") or "folder", "yes" if e["exists"] else "no",
                     e["path"] or e["uri"]) for e in entries]
                widths = [max(len(r[i]) for r in rows) for i in range(4)]
                for row in rows:
                    print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
                print(f"{len(entries)} data set(s) in sandbox {caller.scope.sandbox}")
        elif args.action == "rm":
            for dataset_id in args.ids:
                registry.remove_dataset(caller, dataset_id)
                if not args.json:
                    print(f"Removed data set {dataset_id} (its files are left in place)")
            if args.json:
                print(json.dumps({"removed": args.ids}))
    finally:
        registry.close()
    return 0
