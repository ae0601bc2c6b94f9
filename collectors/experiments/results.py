"""Compare the results of many experiments: read ``results.json`` files, tabulate, summarise.

``ResultsParser`` finds and reads the ``results.json`` written by :class:`ConfigTracker` (format in
docs/experiments.md) under a file, an experiment directory or a directory of experiments.
``ResultsAggregator`` turns them into a markdown comparison table and per-metric statistics (mean, min,
max, std). The Runs page uses the same pure functions for its results table.
"""
from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from collectors import runformat as rf

SEARCH_DEPTH = 2
"""How many directory levels below the given root are searched for results.json."""
MISSING = "—"


@dataclass
class ExperimentResult:
    """The results of one experiment.

    Attributes:
        name: the experiment id (or the directory name when the file has none).
        path: the results.json file.
        final_metrics: metric name -> value.
        best_checkpoint: as recorded (relative to the experiment directory), or None.
        generation_samples: sample texts recorded at the end.
        timestamp: when the results were written (ISO), or None.
    """

    name: str
    path: Path
    final_metrics: dict[str, Any] = field(default_factory=dict)
    best_checkpoint: str | None = None
    generation_samples: list[str] = field(default_factory=list)
    timestamp: str | None = None

    def __getitem__(self, key: str) -> Any:
        """Dict-style access (``exp['final_metrics']``) for scripts written against plain dicts."""
        return getattr(self, key)


def result_from_document(doc: Any, path: Path) -> ExperimentResult:
    """An :class:`ExperimentResult` from a parsed results.json. Pure.

    Raises:
        ValueError: when ``doc`` is not a results document (no ``final_metrics`` object).
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("final_metrics"), dict):
        raise ValueError(f"{path} is not a results file: it needs a 'final_metrics' object")
    samples = doc.get("generation_samples")
    return ExperimentResult(
        name=str(doc.get("experiment_id") or path.parent.name),
        path=path,
        final_metrics=dict(doc["final_metrics"]),
        best_checkpoint=doc.get("best_checkpoint") if isinstance(doc.get("best_checkpoint"), str) else None,
        generation_samples=[str(s) for s in samples] if isinstance(samples, list) else [],
        timestamp=doc.get("timestamp") if isinstance(doc.get("timestamp"), str) else None,
    )


def find_results_files(path: str | os.PathLike[str], depth: int = SEARCH_DEPTH) -> list[Path]:
    """results.json files at ``path`` (a file or directory) and up to ``depth`` levels below, sorted."""
    p = Path(path).expanduser()
    if p.is_file():
        return [p]
    found: list[Path] = []
    level = [p]
    for _ in range(depth + 1):
        nxt: list[Path] = []
        for d in level:
            candidate = d / rf.RESULTS_FILE
            if candidate.is_file():
                found.append(candidate)
                continue  # an experiment's subdirectories are its own (checkpoints, logs)
            try:
                nxt += sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith((".", rf.TMP_PREFIX)))
            except OSError:
                continue
        level = nxt
    return sorted(found)


class ResultsParser:
    """Reads the ``results.json`` of one experiment or of every experiment under a directory.

    Args:
        path: a results.json file, an experiment directory, or a directory of experiments.

    Raises:
        ValueError: when ``path`` does not exist.

    Example:
        >>> parser = ResultsParser("experiments")            # doctest: +SKIP
        >>> for exp in parser.parse():
        ...     print(exp.name, exp.final_metrics["val_loss"])
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise ValueError(f"ResultsParser: {str(self.path)!r} does not exist; give a results.json file, "
                             "an experiment directory or a directory of experiments")
        self.problems: list[str] = []
        self.experiments: list[ExperimentResult] = []

    def parse(self) -> list[ExperimentResult]:
        """Every readable result, sorted by name; unreadable files are listed in ``problems``."""
        self.problems = []
        out: list[ExperimentResult] = []
        for f in find_results_files(self.path):
            doc, problem = rf.read_json(f)
            if problem:
                self.problems.append(problem)
                continue
            try:
                out.append(result_from_document(doc, f))
            except ValueError as exc:
                self.problems.append(str(exc))
        out.sort(key=lambda e: e.name)
        self.experiments = out
        return out


def _numeric(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def format_cell(v: Any) -> str:
    """A table cell: 4 significant digits for floats, scientific when tiny or huge, ``—`` when missing."""
    if v is None:
        return MISSING
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3e}"
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def metric_columns(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Every metric name of any row, in first-seen order."""
    cols: list[str] = []
    for _, metrics in rows:
        for k in metrics:
            if k not in cols:
                cols.append(k)
    return cols


def markdown_table(rows: Sequence[tuple[str, Mapping[str, Any]]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table: one row per experiment, one column per metric. Pure."""
    cols = list(columns) if columns is not None else metric_columns(rows)
    lines = ["| Experiment | " + " | ".join(format_cell(c) for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for name, metrics in rows:
        lines.append(f"| {format_cell(name)} | " + " | ".join(format_cell(metrics.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def summary_statistics(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per numeric metric: ``mean``, ``min``, ``max``, ``std`` (sample, 0 for one value) and ``count``. Pure.

    Non-finite values are left out (a diverged run would otherwise make every statistic NaN).
    """
    values: dict[str, list[float]] = {}
    for metrics in rows:
        for k, v in metrics.items():
            x = _numeric(v)
            if x is not None and math.isfinite(x):
                values.setdefault(k, []).append(x)
    return {k: {"mean": statistics.fmean(xs), "min": min(xs), "max": max(xs),
                "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "count": len(xs)}
            for k, xs in values.items()}


class ResultsAggregator:
    """Collects the final metrics of several experiments for comparison.

    Example:
        >>> agg = ResultsAggregator()                          # doctest: +SKIP
        >>> agg.load_from_parser(ResultsParser("experiments"))
        >>> print(agg.generate_comparison_table())
        >>> agg.generate_summary_statistics()["val_loss"]["min"]
    """

    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any]]] = []

    def add_experiment(self, name: str, final_metrics: Mapping[str, Any]) -> None:
        """Add one experiment's metrics.

        Raises:
            ValueError: when ``final_metrics`` is not a mapping.
        """
        if not isinstance(final_metrics, Mapping):
            raise ValueError(f"add_experiment: final_metrics must be a dict; got {type(final_metrics).__name__}")
        self.rows.append((str(name), dict(final_metrics)))

    def load_from_parser(self, parser: ResultsParser) -> int:
        """Add every experiment the parser finds (parsing it if not done yet); returns how many."""
        experiments = parser.experiments or parser.parse()
        for e in experiments:
            self.add_experiment(e.name, e.final_metrics)
        return len(experiments)

    def generate_comparison_table(self, metrics: Sequence[str] | None = None) -> str:
        """A markdown table of the experiments (rows) and ``metrics`` (columns; default: all)."""
        return markdown_table(self.rows, metrics)

    def generate_summary_statistics(self) -> dict[str, dict[str, float]]:
        """``{metric: {"mean", "min", "max", "std", "count"}}`` over the experiments."""
        return summary_statistics(m for _, m in self.rows)
