"""``python -m harness.history``: list the stored sessions per commit; optionally plot them.

The store, comparisons and the trend live in harness.store, harness.compare and harness.trend.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from harness.store import DEFAULT_STORAGE, HistoryStore
from harness.trend import plot_trend, trend_rows, trend_table


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.history",
                                 description="List stored crossover records per commit; optionally plot them.")
    ap.add_argument("--storage", default=DEFAULT_STORAGE, help=f"history folder (default {DEFAULT_STORAGE})")
    ap.add_argument("--plot", metavar="FILE.png", help="draw primary (and return) per child across records")
    args = ap.parse_args(argv)
    records, warnings = HistoryStore(args.storage).load()
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not records:
        print(f"no crossover records in {args.storage}")
        return 0
    print(trend_table(trend_rows(records)))
    if args.plot:
        print(f"plot: {plot_trend(records, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
