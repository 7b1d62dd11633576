"""The one plotting helper of train.py and the experiments: a saved matplotlib figure (Agg backend, no display)
and accuracy curves with one colour per arm and one line per run."""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def figure(path: Path, rows: int = 1, columns: int = 1, size: tuple[float, float] = (6.5, 3.8), title: str = ""):
    """Yields a `(rows, columns)` array of axes; on exit grids them, adds `title`, lays out and writes `path`
    (PNG, 120 dpi, folders made). The figure is closed either way."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    fig, axes = pyplot.subplots(rows, columns, figsize=size, squeeze=False)
    try:
        yield axes
        for axis in axes.flat:
            axis.grid(alpha=0.3)
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    finally:
        pyplot.close(fig)


def curves(
    axis, runs: Mapping[str, Sequence[Sequence[dict]]], x: str, y: str, scale: Mapping[str, float] | None = None
):
    """Plots `runs` ({arm: [curve, ...]}, a curve a list of points {x: ..., y: ...}) on `axis`: one colour per
    arm, one line per curve, the arm named once in the legend; `scale` multiplies a key's values (e.g. 100 for
    percent)."""

    def values(curve: Sequence[dict], key: str) -> Iterator[float]:
        return (point[key] * (scale or {}).get(key, 1.0) for point in curve)

    for colour, (arm, arm_curves) in enumerate(runs.items()):
        for i, curve in enumerate(arm_curves):
            axis.plot(
                list(values(curve, x)),
                list(values(curve, y)),
                color=f"C{colour}",
                alpha=0.8,
                marker=".",
                label=arm if i == 0 else None,
            )
    if len(runs) > 1:
        axis.legend(fontsize=8)
