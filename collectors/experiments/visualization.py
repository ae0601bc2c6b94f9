"""PNG plots of a training, drawn headless during the training: dynamics, model internals, comparisons.

``VisualizationManager`` writes ``visualizations/<plot>_step_<N>.png`` with matplotlib's Agg canvas
(no display, no pyplot global state, so it is safe in any thread) in a dark theme. Every public method
catches its own errors: a plot that cannot be drawn is reported once and the training goes on.
The data-shaping functions (:func:`as_xy`, :func:`weight_norms`, :func:`singular_values`) are pure and
unit-tested; the drawing around them is thin.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from collectors import runformat as rf
from collectors.experiments.layout import run_root_of
from collectors.runtime import Guard

logger = logging.getLogger("trainboard")

DEFAULT_VIZ_INTERVAL = 1000
DPI = 100
PANEL_SIZE_IN = (6.0, 3.4)
MAX_NORM_BARS = 80
"""Per-layer norm chart shows at most this many matrices (the largest ones) so labels stay legible."""
TOP_MATRICES = 4
"""How many of the largest weight matrices get a singular-value spectrum."""
MAX_SVD_DIM = 4096
"""Matrices whose smaller side exceeds this are skipped: their spectrum would stall the training."""
LOG_SCALE_DECADES = 2.0
PERPLEXITY_MAX_LOSS = 20.0
"""Perplexity is derived from the loss only below this loss (exp overflows the chart above it)."""
DARK_RC = {
    "figure.facecolor": "#111418", "axes.facecolor": "#161b22", "savefig.facecolor": "#111418",
    "axes.edgecolor": "#3a4250", "axes.labelcolor": "#d0d7de", "text.color": "#d0d7de",
    "xtick.color": "#9da7b3", "ytick.color": "#9da7b3", "grid.color": "#2a313c", "axes.grid": True,
    "grid.linestyle": "-", "grid.linewidth": 0.6, "legend.facecolor": "#161b22", "legend.edgecolor": "#3a4250",
    "font.size": 9,
}
SERIES_COLOURS = ("#4c9aff", "#ff8b3d", "#3ddc97", "#e05d8a", "#b58cff", "#f2cc60", "#5fd4e8", "#c9d1d9")


# --------------------------------------------------------------------------- pure data shaping

def as_xy(history: Any) -> tuple[list[float], list[float]]:
    """``(x, y)`` from a history: numbers (x = index), ``(step, value)`` pairs, or a step -> value mapping.

    Non-numeric entries are dropped; non-finite values are dropped too (matplotlib cannot place them).
    """
    xs: list[float] = []
    ys: list[float] = []
    if history is None:
        return xs, ys
    if isinstance(history, Mapping):
        items: Iterable[Any] = sorted(history.items(), key=lambda kv: float(kv[0]))
    else:
        items = history
    for i, item in enumerate(items):
        if isinstance(item, (tuple, list)) and len(item) == 2:
            x, y = item
        else:
            x, y = i, item
        y = _number(y)
        x = _number(x)
        if x is None or y is None or not math.isfinite(y):
            continue
        xs.append(x)
        ys.append(y)
    return xs, ys


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    item = getattr(v, "item", None)
    if callable(item) and not isinstance(v, (int, float)):
        try:
            v = item()
        except (TypeError, ValueError, RuntimeError):
            return None
    return float(v) if isinstance(v, (int, float)) else None


def wants_log_scale(values: Sequence[float]) -> bool:
    """True when all values are positive and span more than ``LOG_SCALE_DECADES`` decades."""
    pos = [v for v in values if v > 0]
    return bool(values) and len(pos) == len(values) and math.log10(max(pos) / min(pos)) > LOG_SCALE_DECADES


def weight_norms(model: Any) -> list[tuple[str, float]]:
    """Frobenius norm of every weight matrix (parameters with 2+ dimensions), in model order.

    Raises:
        AttributeError: when ``model`` has no ``named_parameters`` (not a torch module).
    """
    out = []
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            out.append((name, float(p.detach().float().norm())))
    return out


def largest_matrices(model: Any, k: int = TOP_MATRICES) -> list[tuple[str, Any]]:
    """The ``k`` weight matrices with the most elements (ties in model order), as (name, tensor)."""
    mats = [(name, p) for name, p in model.named_parameters() if p.dim() >= 2]
    mats.sort(key=lambda np_: -np_[1].numel())
    return mats[:k]


def singular_values(weight: Any) -> list[float]:
    """Singular values of a weight (conv kernels flattened to rows), largest first, via the Gram matrix.

    Raises:
        ValueError: when the smaller side exceeds ``MAX_SVD_DIM``.
    """
    import torch

    w = weight.detach().float().cpu()
    w = w.reshape(w.shape[0], -1)
    if min(w.shape) > MAX_SVD_DIM:
        raise ValueError(f"matrix {tuple(w.shape)} is too large for a spectrum (> {MAX_SVD_DIM} on both sides)")
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    eig = torch.linalg.eigvalsh(gram.double()).clamp_min(0).sqrt()
    return sorted((float(x) for x in eig), reverse=True)


def input_embedding_weight(model: Any) -> Any | None:
    """The input embedding matrix: ``get_input_embeddings()`` (transformers) or the first ``nn.Embedding``."""
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if emb is None and callable(getattr(model, "modules", None)):
        import torch

        emb = next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None)
    weight = getattr(emb, "weight", None)
    return weight if weight is not None and weight.dim() == 2 else None


# --------------------------------------------------------------------------- drawing

def _figure(n_panels: int, cols: int = 2) -> tuple[Any, list[Any]]:
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(DARK_RC):
        cols = min(cols, max(1, n_panels))
        rows = math.ceil(n_panels / cols)
        fig = Figure(figsize=(PANEL_SIZE_IN[0] * cols, PANEL_SIZE_IN[1] * rows), dpi=DPI)
        axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]
    return fig, axes


def _style_axes(ax: Any) -> None:
    ax.set_facecolor(DARK_RC["axes.facecolor"])
    ax.set_axisbelow(True)
    for spine in ax.spines.values():
        spine.set_color(DARK_RC["axes.edgecolor"])
    ax.tick_params(colors=DARK_RC["xtick.color"])
    ax.grid(True, color=DARK_RC["grid.color"], linewidth=0.6)
    ax.title.set_color(DARK_RC["text.color"])
    ax.xaxis.label.set_color(DARK_RC["axes.labelcolor"])
    ax.yaxis.label.set_color(DARK_RC["axes.labelcolor"])


def _save(fig: Any, path: Path) -> Path:
    """Render ``fig`` to ``path`` atomically (temp file in the same directory, then rename)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.set_facecolor(DARK_RC["figure.facecolor"])
    fig.tight_layout()
    with rf.atomic_write(path) as fh:
        fig.savefig(fh, format="png", facecolor=DARK_RC["figure.facecolor"])
    return path


class VisualizationManager:
    """Draws training and model plots as PNG files named by step, headless, in a dark theme.

    Args:
        viz_dir: the experiment's ``visualizations/`` directory (or the experiment directory itself).
        viz_interval: ``should_visualize(step)`` is true every this many steps (default 1000).

    Raises:
        ValueError: when ``viz_interval`` is not a positive integer or ``viz_dir`` is empty or a file.

    Example:
        >>> viz = VisualizationManager(dirs["visualizations"], viz_interval=500)   # doctest: +SKIP
        >>> if viz.should_visualize(step):
        ...     viz.generate_training_plots(step, loss_history, {"learning_rate": lr_history})
        ...     viz.generate_model_plots(step, model)
    """

    def __init__(self, viz_dir: str | os.PathLike[str], viz_interval: int = DEFAULT_VIZ_INTERVAL) -> None:
        if viz_dir is None or not str(viz_dir).strip():
            raise ValueError("VisualizationManager(viz_dir=...) needs a directory path; got an empty value")
        if not isinstance(viz_interval, int) or isinstance(viz_interval, bool) or viz_interval < 1:
            raise ValueError(f"VisualizationManager(viz_interval=...) must be a positive integer; got {viz_interval!r}")
        self.viz_dir = rf.RunPaths.of(run_root_of(viz_dir, rf.VISUALIZATIONS_DIR)).visualizations_dir
        if self.viz_dir.exists() and not self.viz_dir.is_dir():
            raise ValueError(f"VisualizationManager viz_dir {str(self.viz_dir)!r} is not a directory")
        self.viz_interval = viz_interval
        self.guard = Guard(logger)

    def should_visualize(self, step: int) -> bool:
        """True every ``viz_interval`` steps (not at step 0, where there is nothing to plot yet)."""
        return step > 0 and step % self.viz_interval == 0

    def _path(self, plot: str, step: int | None) -> Path:
        return self.viz_dir / (f"{plot}_step_{step}.png" if step is not None else f"{plot}.png")

    # ----------------------------------------------------------------- training dynamics
    def generate_training_plots(self, step: int, loss_history: Any, metrics: Mapping[str, Any] | None = None) -> list[Path]:
        """``training_dynamics_step_<N>.png``: loss, learning rate, perplexity and every other history given.

        Args:
            step: the current step (names the file).
            loss_history: losses (one per step), ``(step, loss)`` pairs, or a step -> loss mapping.
            metrics: name -> history of the same shapes (``learning_rate``, ``perplexity``, ...).

        Returns:
            The files written (empty when the plot failed; the failure is reported once).
        """
        return self.guard.run("training plots", self._training_plots, step, loss_history, metrics or {}, default=[]) or []

    def _training_plots(self, step: int, loss_history: Any, metrics: Mapping[str, Any]) -> list[Path]:
        panels: list[tuple[str, tuple[list[float], list[float]]]] = [("loss", as_xy(loss_history))]
        for name, hist in metrics.items():
            panels.append((str(name), as_xy(hist)))
        names = {n for n, _ in panels}
        lx, ly = panels[0][1]
        if "perplexity" not in names and ly and max(ly) < PERPLEXITY_MAX_LOSS:
            panels.append(("perplexity (exp loss)", (lx, [math.exp(v) for v in ly])))
        panels = [(n, xy) for n, xy in panels if xy[0]]
        if not panels:
            self.guard.warn_once("training plots: empty", "training plots skipped: the loss and metric histories are empty")
            return []
        fig, axes = _figure(len(panels))
        for i, (ax, (name, (xs, ys))) in enumerate(zip(axes, panels)):
            _style_axes(ax)
            ax.plot(xs, ys, color=SERIES_COLOURS[i % len(SERIES_COLOURS)], linewidth=1.2)
            ax.set_title(name)
            ax.set_xlabel("step")
            if wants_log_scale(ys):
                ax.set_yscale("log")
        fig.suptitle(f"Training dynamics at step {step}", color=DARK_RC["text.color"])
        return [_save(fig, self._path("training_dynamics", step))]

    # ----------------------------------------------------------------- model internals
    def generate_model_plots(self, step: int, model: Any) -> list[Path]:
        """Per-layer weight norms, singular-value spectra of the largest matrices and embedding norms.

        Works for any torch model. A plot needing something the model lacks is skipped with a warning
        (reported once); the others are still drawn. Returns the files written.
        """
        if not hasattr(model, "named_parameters"):
            self.guard.warn_once("model plots: not a module",
                                 f"model plots skipped: {type(model).__name__} has no named_parameters (not a torch module)")
            return []
        written: list[Path] = []
        for kind, fn in (("weight norm plot", self._norms_plot), ("singular value plot", self._svd_plot),
                         ("embedding plot", self._embedding_plot)):
            out = self.guard.run(kind, fn, step, model, default=None)
            if out is not None:
                written.append(out)
        return written

    def _norms_plot(self, step: int, model: Any) -> Path | None:
        norms = weight_norms(model)
        if not norms:
            self.guard.warn_once("model plots: no matrices", "weight norm plot skipped: the model has no weight matrices")
            return None
        if len(norms) > MAX_NORM_BARS:
            keep = {n for n, _ in sorted(norms, key=lambda t: -t[1])[:MAX_NORM_BARS]}
            norms = [t for t in norms if t[0] in keep]
        fig, (ax,) = _figure(1, cols=1)
        fig.set_size_inches(PANEL_SIZE_IN[0] * 1.6, max(PANEL_SIZE_IN[1], 0.22 * len(norms) + 1.2))
        _style_axes(ax)
        ys = list(range(len(norms)))
        ax.barh(ys, [v for _, v in norms], color=SERIES_COLOURS[0])
        ax.set_yticks(ys, [n for n, _ in norms], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("Frobenius norm")
        ax.set_title(f"Per-layer weight norms at step {step}")
        return _save(fig, self._path("weight_norms", step))

    def _svd_plot(self, step: int, model: Any) -> Path | None:
        spectra: list[tuple[str, list[float]]] = []
        for name, w in largest_matrices(model):
            try:
                spectra.append((f"{name} {tuple(w.shape)}", singular_values(w)))
            except ValueError as exc:
                self.guard.warn_once(f"singular values of {name}", f"spectrum of {name} skipped: {exc}")
        if not spectra:
            return None
        fig, (ax,) = _figure(1, cols=1)
        _style_axes(ax)
        for i, (label, sv) in enumerate(spectra):
            ax.plot(range(1, len(sv) + 1), sv, color=SERIES_COLOURS[i % len(SERIES_COLOURS)], label=label, linewidth=1.2)
        ax.set_yscale("log")
        ax.set_xlabel("index")
        ax.set_ylabel("singular value")
        ax.set_title(f"Singular-value spectra of the largest matrices at step {step}")
        ax.legend(fontsize=7)
        return _save(fig, self._path("singular_values", step))

    def _embedding_plot(self, step: int, model: Any) -> Path | None:
        weight = input_embedding_weight(model)
        if weight is None:
            self.guard.warn_once("model plots: no embeddings",
                                 f"embedding plot skipped: {type(model).__name__} has no get_input_embeddings "
                                 "attribute and no nn.Embedding module")
            return None
        norms = weight.detach().float().norm(dim=1).cpu().tolist()
        fig, (ax,) = _figure(1, cols=1)
        _style_axes(ax)
        ax.hist(norms, bins=min(60, max(10, len(norms) // 10)), color=SERIES_COLOURS[2])
        ax.set_xlabel("row norm")
        ax.set_ylabel("tokens")
        ax.set_title(f"Input embedding norms ({len(norms)} tokens) at step {step}")
        return _save(fig, self._path("embeddings", step))

    # ----------------------------------------------------------------- comparisons
    def generate_comparison_plots(self, experiments: Sequence[Mapping[str, Any]], filename: str = "comparison.png") -> list[Path]:
        """One figure overlaying several experiments: loss, then every metric any of them has.

        Args:
            experiments: dicts with ``name``, ``loss_history`` and optional ``metrics`` (name -> history).
            filename: the PNG's name in the visualization directory (default ``comparison.png``).

        Returns:
            The files written (empty, with a warning, for malformed input or a drawing failure).
        """
        return self.guard.run("comparison plots", self._comparison, experiments, filename, default=[]) or []

    def _comparison(self, experiments: Sequence[Mapping[str, Any]], filename: str) -> list[Path]:
        if not isinstance(experiments, Sequence) or not experiments or \
                not all(isinstance(e, Mapping) for e in experiments):
            raise ValueError("experiments must be a non-empty list of dicts with 'name' and 'loss_history'")
        if Path(filename).name != filename or not filename.endswith(".png"):
            raise ValueError(f"filename must be a plain file name ending in .png; got {filename!r}")
        metric_names: list[str] = []
        for e in experiments:
            for m in (e.get("metrics") or {}):
                if m not in metric_names:
                    metric_names.append(str(m))
        panels = ["loss", *metric_names]
        fig, axes = _figure(len(panels))
        for ax, panel in zip(axes, panels):
            _style_axes(ax)
            all_y: list[float] = []
            for i, e in enumerate(experiments):
                hist = e.get("loss_history") if panel == "loss" else (e.get("metrics") or {}).get(panel)
                xs, ys = as_xy(hist)
                if xs:
                    ax.plot(xs, ys, color=SERIES_COLOURS[i % len(SERIES_COLOURS)], linewidth=1.2,
                            label=str(e.get("name", f"experiment {i + 1}")))
                    all_y += ys
            ax.set_title(panel)
            ax.set_xlabel("step")
            if wants_log_scale(all_y):
                ax.set_yscale("log")
            if all_y:
                ax.legend(fontsize=7)
        fig.suptitle("Experiment comparison", color=DARK_RC["text.color"])
        return [_save(fig, self.viz_dir / filename)]
