"""How every picture looks and is made (session report and history site alike): one fixed style, a figure of
fixed width with the legend in a strip to the right of the data, and the PNG encoding.

matplotlib is imported inside the functions only: importing this module costs nothing, and the plugin imports
no matplotlib until a report is written. Figures come from ``matplotlib.figure.Figure`` (no pyplot: no global
state, no GUI backend).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Sized for a 1200 px window: 11 in at 100 dpi is 1100 px, shown 1:1 in the report's 1160 px column.
WIDTH_IN = 11.0
DPI = 100
STYLE: dict[str, Any] = {
    "font.family": "DejaVu Sans", "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
    "legend.fontsize": 9, "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.grid": True, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "lines.linewidth": 1.5, "lines.markersize": 7,
    "figure.facecolor": "white", "savefig.facecolor": "white", "figure.dpi": DPI, "savefig.dpi": DPI,
}
# Okabe-Ito (colour-blind safe), without its yellow (unreadable on white), then tab20 for long lists.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C564B", "#4D4D4D")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h", "<", ">")


@contextmanager
def style() -> Iterator[None]:
    """matplotlib with the Agg backend (no display needed) and the fixed style, for drawing and saving."""
    import matplotlib

    matplotlib.use("Agg")
    from cycler import cycler

    rc: Any = {**STYLE, "axes.prop_cycle": cycler(color=PALETTE)}
    with matplotlib.rc_context(rc):
        yield


def png(fig: Figure) -> bytes:
    _lean(fig)
    buf = io.BytesIO()
    # compress_level 1: half the default's encode time, files ~6% larger.
    fig.savefig(buf, format="png", pil_kwargs={"compress_level": 1})
    return buf.getvalue()


def colour(i: int) -> str:
    if i < len(PALETTE):
        return PALETTE[i]
    import matplotlib

    return str(matplotlib.colors.to_hex(matplotlib.colormaps["tab20"]((i - len(PALETTE)) % 20)))


# Fixed margins, the legend in the right-hand strip: a constrained or tight layout costs a second layout pass
# (~40% of a picture's time) and the pictures' contents are known.
LEGEND_X = 0.775


def new_figure(height: float, *, right: float = LEGEND_X - 0.015, bottom_in: float = 0.55, top_in: float = 0.35,
            left: float = 0.075, wspace: float = 0.22, hspace: float = 0.3) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, height))
    fig.subplots_adjust(left=left, right=right, bottom=bottom_in / height, top=1 - top_in / height, wspace=wspace,
                        hspace=hspace)
    return fig


def _lean(fig: Figure) -> None:
    """At most ~6 ticks per axis, plain numbers on log axes: each tick is an object with its own text (~1 ms to
    lay out), and a log axis's default labels are mathtext (~30 ms to parse) with unlabelled minor ticks."""
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, LogLocator, MaxNLocator, NullLocator

    for ax in fig.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale == "log":
                axis.set_major_locator(LogLocator(numticks=6))
                axis.set_major_formatter(FormatStrFormatter("%g"))
                axis.set_minor_locator(NullLocator())
            elif not isinstance(axis.get_major_locator(), FixedLocator):
                axis.set_major_locator(MaxNLocator(nbins=6))


def side_legend(fig: Figure, handles: Sequence[Any]) -> None:
    """The legend right of the data, never over it."""
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(LEGEND_X, 1 - 0.3 / fig.get_figheight()),
               frameon=False)


def handle(label: str, **kw: Any) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], label=label, linestyle=kw.pop("linestyle", "none"), **kw)


LINESTYLES = ("-", "--", ":", "-.")
