"""/api/v1/runs/{id}/plot.png and plot.svg: a run's learning curves as an image.

Loss and val_loss share the left axis (logarithmic when every value is positive and they
span more than two decades); accuracy and val_accuracy, when the run has them, go on a
second axis on the right, from 0 to 1. A run without finished epochs gives a valid image that
says "no epochs yet". Rendering uses matplotlib's object API with the Agg canvas (no pyplot,
no backend switch, no global figure state), in the thread pool: the routes are plain ``def``.

In the SVG each curve is one ``<g id="curve-<metric>">`` holding one ``<path>`` whose
vertices are the plotted epochs, and text stays text. At most ``MAX_POINTS`` epochs are
plotted per curve (evenly spread, always the first and the last); the headers
``X-Plot-Epochs`` and ``X-Plot-Points`` say how many epochs there are and how many were drawn.
"""

from __future__ import annotations

import io
import math
from threading import Lock
from typing import TYPE_CHECKING, Any

import matplotlib
from fastapi import APIRouter, Response
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sqlalchemy import select

from api.deps import OwnerDep, ResourceId, SessionDep, get_owned
from api.schemas import error_responses
from core.db.models import MetricRow, Run

if TYPE_CHECKING:
    from matplotlib.lines import Line2D
    from matplotlib.typing import RcKeyType

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])

MAX_POINTS = 2000
LOSS_KEYS = ("loss", "val_loss")
ACCURACY_KEYS = ("accuracy", "val_accuracy")
COLORS = {
    "loss": "#1f77b4",
    "val_loss": "#ff7f0e",
    "accuracy": "#2ca02c",
    "val_accuracy": "#d62728",
}
MEDIA_TYPES = {"png": "image/png", "svg": "image/svg+xml"}
RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "backprop",
    "path.simplify": False,
}

# matplotlib's rcParams are process-global; renders take turns.
_render_lock = Lock()


def _sample(n: int, max_points: int = MAX_POINTS) -> list[int]:
    """Indices of at most ``max_points`` of ``n`` items, evenly spread, first and last kept."""
    if n <= max_points:
        return list(range(n))
    step = (n - 1) / (max_points - 1)
    return sorted({round(i * step) for i in range(max_points)})


def _finite(value: Any) -> float:
    return float(value) if value is not None and math.isfinite(value) else math.nan


def render_curves(
    items: list[dict[str, Any]], fmt: str, title: str, best_epoch: int | None = None
) -> tuple[bytes, int]:
    """Learning curves of metric ``items`` (API.md §5) as ``fmt`` bytes, with a marker at
    ``best_epoch`` (the model's epoch) when given; also the points drawn."""
    picked = [items[i] for i in _sample(len(items))]
    epochs = [int(item["epoch"]) for item in picked]
    with _render_lock, matplotlib.rc_context(RC):
        fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
        lines: list[Line2D] = []
        loss_values: list[float] = []  # finite ones: they choose the scale
        if not picked:
            ax.text(
                0.5, 0.5, "no epochs yet", transform=ax.transAxes, ha="center", va="center",
                fontsize=16, color="#666666",
            )  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
        for key in LOSS_KEYS:
            if picked and any(key in item for item in picked):
                values = [_finite(item.get(key)) for item in picked]
                (line,) = ax.plot(epochs, values, color=COLORS[key], label=key, linewidth=1.5)
                line.set_gid(f"curve-{key}")
                lines.append(line)
                loss_values.extend(v for v in values if math.isfinite(v))
        if loss_values and min(loss_values) > 0 and max(loss_values) / min(loss_values) > 100:
            ax.set_yscale("log")
        if picked and any(key in item for item in picked for key in ACCURACY_KEYS):
            ax2 = ax.twinx()
            ax2.set_ylabel("accuracy")
            ax2.set_ylim(0, 1.02)
            for key in ACCURACY_KEYS:
                if any(key in item for item in picked):
                    values = [_finite(item.get(key)) for item in picked]
                    (line,) = ax2.plot(
                        epochs, values, color=COLORS[key], label=key, linewidth=1.2,
                        linestyle="--",
                    )  # fmt: skip
                    line.set_gid(f"curve-{key}")
                    lines.append(line)
        if best_epoch is not None and picked:
            marker = ax.axvline(best_epoch, color="#555555", linestyle=":", linewidth=1.2,
                                label=f"best epoch {best_epoch}")  # fmt: skip
            marker.set_gid("best-epoch")
            lines.append(marker)
        if lines:
            if len(epochs) == 1:
                for line in lines:
                    line.set_marker("o")
            ax.legend(lines, [str(line.get_label()) for line in lines], loc="best")
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue(), len(picked)


def _plot(run_id: str, fmt: str, db: SessionDep, owner: str) -> Response:
    run = get_owned(db, Run, owner, run_id)
    rows = db.scalars(select(MetricRow).where(MetricRow.run_id == run_id).order_by(MetricRow.epoch))
    items = [row.as_item() for row in rows]
    title = f"{run.name or 'run ' + run.id} — {run.status}, epoch {run.epoch}/{run.epochs}"
    data, points = render_curves(items, fmt, title, best_epoch=run.best_epoch)
    return Response(
        data,
        media_type=MEDIA_TYPES[fmt],
        headers={
            "Cache-Control": "no-store",
            "X-Plot-Epochs": str(len(items)),
            "X-Plot-Points": str(points),
        },
    )


@router.get(
    "/{run_id}/plot.png",
    response_class=Response,
    summary="A run's learning curves as PNG",
    responses={
        200: {"content": {"image/png": {}}, "description": "PNG image"},
        **error_responses(401, 404, 422, 503),
    },
)
def plot_png(run_id: ResourceId, db: SessionDep, owner: OwnerDep) -> Response:
    """The run's loss (and accuracy) curves per epoch as a PNG image, at any time of its
    life: a run without finished epochs gives an image saying "no epochs yet".

    `loss` and `val_loss` share the left axis (logarithmic when all are positive and span
    more than two decades); `accuracy` and `val_accuracy`, when the run has them, use a
    right axis from 0 to 1. At most 2000 epochs are drawn per curve, evenly spread, the
    first and last kept; the headers `X-Plot-Epochs` and `X-Plot-Points` say how many
    epochs there are and how many were drawn.
    """
    return _plot(run_id, "png", db, owner)


@router.get(
    "/{run_id}/plot.svg",
    response_class=Response,
    summary="A run's learning curves as SVG",
    responses={
        200: {"content": {"image/svg+xml": {}}, "description": "SVG image"},
        **error_responses(401, 404, 422, 503),
    },
)
def plot_svg(run_id: ResourceId, db: SessionDep, owner: OwnerDep) -> Response:
    """The same learning curves as `plot.png`, as an SVG image: each curve is one
    `<g id="curve-<metric>">` holding one `<path>` through the plotted epochs, and text
    stays text. The `X-Plot-Epochs` and `X-Plot-Points` headers are set as for the PNG.
    """
    return _plot(run_id, "svg", db, owner)
