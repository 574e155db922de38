"""The HTML building blocks shared by the session report and the history site: one style sheet, escaping and
tables. Pages are plain HTML with the style inline: they open from disk, offline, with no JavaScript."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

# Laid out for a 1200 px window: a 1160 px column (room for a scrollbar), the 1100 px pictures shown 1:1.
STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1a1a1a;
 max-width:1160px;margin:0 auto;padding:16px 12px 48px}
h1{font-size:24px;margin:8px 0}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:14px 0 4px}
nav{font-size:13px;margin:8px 0 4px}a{color:#0b62a4}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{padding:3px 6px;border-bottom:1px solid #e3e3e3;text-align:left;vertical-align:top}
th{background:#f3f4f6;position:sticky;top:0;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ci{color:#666;font-size:11px}
tr.best td{background:#fff4d6}tr.baseline td{background:#eef3f8;font-style:italic}
tr.bad td{color:#a11}tr.chosen td{background:#d9f2dd;font-weight:600}
.decision{background:#eef8f0;border-left:5px solid #17612c;padding:4px 14px 8px;margin:12px 0}
.decision h2{border:0;margin:6px 0 2px}.decision .use{font-size:17px;font-weight:600;margin:4px 0}
.decision ul{margin:4px 0;padding-left:20px}
.ok{color:#17612c}.failed{color:#a11;background:#fdecec;padding:6px 10px;border-left:4px solid #a11}
.note{color:#555;background:#f5f5f5;padding:6px 10px}
figure{margin:8px 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:13px;color:#444}.file{color:#888}
.cols{display:flex;gap:32px;flex-wrap:wrap}.cols>div{flex:1 1 420px;min-width:0}
dl.legend{font-size:13px;display:grid;grid-template-columns:max-content 1fr;gap:2px 12px}
dl.legend dt{font-weight:600}dl.legend dd{margin:0}
.wrap{overflow-x:auto}
"""


def esc(value: Any) -> str:
    return html.escape("—" if value is None else str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, row_classes: Sequence[str] | None = None,
          numeric: Sequence[bool] | None = None, raw: bool = False, table_id: str | None = None) -> str:
    """An HTML table; cells are escaped unless ``raw`` (the caller built them from escaped parts)."""
    num = list(numeric or [False] * len(headers))
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td{" class=num" if j < len(num) and num[j] else ""}>{c if raw else esc(c)}</td>'
                        for j, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f'<div class=wrap><table{ident}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def legend(items: Sequence[tuple[str, str]]) -> str:
    return "<dl class=legend>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>"


def document(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title>"
            f"<meta name=viewport content='width=device-width'><style>{STYLE}</style></head><body>{body}"
            "</body></html>\n")
