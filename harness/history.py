"""``python -m harness.history``: list the stored sessions per commit; optionally plot them or build the site.

The store, comparisons, the trend and the site live in harness.records.store, harness.records.compare,
harness.pictures.trend and harness.pictures.site.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from harness.core.errors import HarnessError
from harness.pictures.trend import plot_trend, trend_rows, trend_table
from harness.records.store import DEFAULT_STORAGE, HistoryStore


def main(argv: Sequence[str] | None = None) -> int:
    from harness.pictures.site import DEFAULT_FAIL

    ap = argparse.ArgumentParser(prog="python -m harness.history",
                                 description="List stored crossover records per commit; optionally plot them or "
                                             "write the history site.")
    ap.add_argument("--storage", default=DEFAULT_STORAGE, help=f"history folder (default {DEFAULT_STORAGE})")
    ap.add_argument("--plot", metavar="FILE.png", help="draw the best child and each recipe across records, one "
                    "PNG per series (FILE-<series>.png when the store holds several)")
    ap.add_argument("--site", metavar="DIR", help="write the static history site into DIR (index.html, a page per "
                    "series, regressions.html)")
    ap.add_argument("--fail", metavar="EXPR", default=DEFAULT_FAIL,
                    help="the site's regression checks, as --crossover-compare-fail takes them "
                         f"(default {DEFAULT_FAIL})".replace("%", "%%"))
    args = ap.parse_args(argv)
    from harness.records.compare import parse_fail

    try:
        checks = parse_fail(args.fail)
    except HarnessError as exc:
        ap.error(f"--fail: {exc}")
    records, warnings = HistoryStore(args.storage).load()
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not records:
        print(f"no crossover records in {args.storage}")
        return 0
    print(trend_table(trend_rows(records)))
    if args.plot:
        for path in plot_trend(records, args.plot):
            print(f"plot: {path}")
    if args.site:
        from harness.pictures.site import build_site

        pages = build_site(records, args.site, checks, warnings)
        print(f"site: {pages[0]} ({len(pages)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
