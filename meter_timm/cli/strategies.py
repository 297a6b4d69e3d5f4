"""``meter-timm strategies``: list the depth-bin assignment strategies and their plugins."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def run(args: argparse.Namespace) -> int:
    from meter_timm.strategies import list_strategies

    rows = [
        {
            "name": info.name,
            "plugin": info.distribution if info.distribution != "(in memory)" else info.plugin,
            "version": info.version,
            "learned": info.learnable,
            "description": info.description,
            "module": info.plugin,
        }
        for info in list_strategies()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("name", "plugin", "version", "learned", "description")
    table = [header] + [
        (r["name"], r["plugin"], r["version"], "yes" if r["learned"] else "no", r["description"])
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
        )
    return 0
