"""What an experiment was and what it reached: ``config.json`` at the start, ``results.json`` at the end.

``ConfigTracker`` records the configuration with everything needed to reproduce or compare the run
(experiment id, timestamp, git commit, the command line, hardware, torch version, parameter count,
dataset description) and the final results. The Runs page diffs these files between runs and tabulates
the results; :mod:`collectors.experiments.results` aggregates them. Both files are written atomically.
"""
from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from collectors import runformat as rf
from collectors.experiments.checkpoints import jsonable_config, unwrap_model
from collectors.runtime import BYTES_PER_GB, Guard, iso_now, is_main_process

logger = logging.getLogger("trainboard")

GIT_TIMEOUT_S = 5.0
UNKNOWN = "unknown"


def git_info(directory: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``{"git_hash", "git_dirty"}`` of the repository containing ``directory`` (default: cwd).

    The hash is ``"unknown"`` and dirty is None outside a repository or without git.
    """
    cwd = str(directory) if directory else None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
        if head.returncode != 0 or not head.stdout.strip():
            return {"git_hash": UNKNOWN, "git_dirty": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return {"git_hash": head.stdout.strip(), "git_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_hash": UNKNOWN, "git_dirty": None}


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or UNKNOWN


def hardware_info() -> dict[str, Any]:
    """CPU, cores, RAM, GPU model/count and CUDA version (None without a GPU), torch and Python versions."""
    info: dict[str, Any] = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "ram_gb": None, "gpu_model": None,
                            "gpu_count": 0, "cuda_version": None, "torch_version": None,
                            "python_version": platform.python_version(), "platform": platform.platform()}
    try:
        import psutil

        info["ram_gb"] = round(psutil.virtual_memory().total / BYTES_PER_GB, 2)
    except Exception:  # noqa: BLE001 - psutil missing: RAM stays unknown
        pass
    try:
        import torch

        info["torch_version"] = torch.__version__
        info["cuda_version"] = torch.version.cuda
        if torch.cuda.is_available():
            info["gpu_count"] = torch.cuda.device_count()
            info["gpu_model"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - no torch or a broken driver: the GPU fields stay None
        pass
    return info


def count_parameters(model: Any) -> dict[str, Any] | None:
    """``{"class", "num_parameters", "trainable_parameters"}`` of a torch model (shared weights counted once)."""
    if model is None or not hasattr(model, "parameters"):
        return None
    inner = unwrap_model(model)
    params = list(inner.parameters())
    return {"class": type(inner).__name__, "num_parameters": sum(p.numel() for p in params),
            "trainable_parameters": sum(p.numel() for p in params if p.requires_grad)}


def build_config_document(experiment_id: str, config: Any, model_info: Mapping[str, Any] | None,
                          dataset_info: Any, hardware: Mapping[str, Any], git: Mapping[str, Any],
                          command: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The content of ``config.json``. Pure: every input is passed in."""
    return {
        "v": rf.SCHEMA_VERSION,
        "experiment_id": experiment_id,
        "timestamp": iso_now(now),
        "created_at": now,
        "git_hash": git.get("git_hash", UNKNOWN),
        "git_dirty": git.get("git_dirty"),
        "command": dict(command),
        "hardware": dict(hardware),
        "num_parameters": (model_info or {}).get("num_parameters"),
        "model": dict(model_info) if model_info else None,
        "config": jsonable_config(config) if config is not None else {},
        "dataset_info": jsonable_config(dataset_info) if dataset_info is not None else {},
    }


def build_results_document(experiment_id: str, final_metrics: Mapping[str, Any], best_checkpoint: Any,
                           generation_samples: Sequence[Any] | None, now: float) -> dict[str, Any]:
    """The content of ``results.json`` (format in docs/experiments.md). Pure."""
    return {
        "v": rf.SCHEMA_VERSION,
        "experiment_id": experiment_id,
        "timestamp": iso_now(now),
        "finished_at": now,
        "final_metrics": rf.encode_value(dict(final_metrics)),
        "best_checkpoint": os.fspath(best_checkpoint) if best_checkpoint is not None else None,
        "generation_samples": [str(s) for s in (generation_samples or [])],
    }


class ConfigTracker:
    """Writes ``config.json`` and ``results.json`` of one experiment and reads them back.

    Args:
        experiment_dir: the experiment (run) directory.
        main_process: write from this process; default None means "world rank is 0".

    Raises:
        ValueError: when ``experiment_dir`` is empty or names a file.

    Example:
        >>> tracker = ConfigTracker(dirs["root"])                                 # doctest: +SKIP
        >>> tracker.save_config({"lr": 1e-3}, model, {"name": "TinyShakespeare"})
        >>> tracker.save_results({"val_loss": 4.5}, "checkpoints/checkpoint_step_5000.pt")
    """

    def __init__(self, experiment_dir: str | os.PathLike[str], *, main_process: bool | None = None) -> None:
        if experiment_dir is None or not str(experiment_dir).strip():
            raise ValueError("ConfigTracker(experiment_dir=...) needs a directory path; got an empty value")
        self.paths = rf.RunPaths.of(Path(experiment_dir).expanduser())
        if self.paths.root.exists() and not self.paths.root.is_dir():
            raise ValueError(f"ConfigTracker experiment_dir {str(self.paths.root)!r} is not a directory")
        self.is_main = is_main_process(main_process)
        self.experiment_id = self.paths.root.name
        self.guard = Guard(logger)

    def save_config(self, config: Any, model: Any = None, dataset_info: Any = None) -> Path | None:
        """Write ``config.json``; returns its path, or None when it could not be written (warned once).

        Args:
            config: hyperparameters (dict, dataclass, argparse Namespace or object with ``to_dict``).
            model: the torch model, for the parameter count (optional).
            dataset_info: a description of the data (optional).
        """
        if not self.is_main:
            return None
        return self.guard.run("writing config.json", self._save_config, config, model, dataset_info)

    def _save_config(self, config: Any, model: Any, dataset_info: Any) -> Path:
        script = Path(sys.argv[0]).resolve().parent if sys.argv and sys.argv[0] not in ("", "-c") else None
        git = git_info(script if script and script.is_dir() else None)
        command = {"argv": list(sys.argv), "cwd": os.getcwd(), "python": sys.executable}
        doc = build_config_document(self.experiment_id, config, count_parameters(model), dataset_info,
                                    hardware_info(), git, command, time.time())
        rf.write_json_atomic(self.paths.config, doc, fsync=True)
        return self.paths.config

    def load_config(self) -> dict[str, Any] | None:
        """The saved ``config.json``, or None (with a warning saying why) when missing or unreadable."""
        doc, problem = rf.read_json(self.paths.config)
        if problem or not isinstance(doc, dict):
            logger.warning("Trainboard: %s", problem or f"{self.paths.config} is not a JSON object")
            return None
        return doc

    def save_results(self, final_metrics: Mapping[str, Any], best_checkpoint: Any = None,
                     generation_samples: Sequence[Any] | None = None) -> Path | None:
        """Write ``results.json``; returns its path, or None when it could not be written (warned once).

        Raises:
            ValueError: when ``final_metrics`` is not a mapping (a mistake in the calling code).
        """
        if not isinstance(final_metrics, Mapping):
            raise ValueError(f"save_results(final_metrics=...) must be a dict of name -> value; "
                             f"got {type(final_metrics).__name__}")
        if not self.is_main:
            return None
        doc = build_results_document(self.experiment_id, final_metrics, best_checkpoint, generation_samples, time.time())
        ok = self.guard.run("writing results.json", rf.write_json_atomic, self.paths.results, doc, fsync=True, default=False)
        return self.paths.results if ok is not False else None

    def load_results(self) -> dict[str, Any] | None:
        """The saved ``results.json``, or None (with a warning) when missing or unreadable."""
        doc, problem = rf.read_json(self.paths.results)
        if problem or not isinstance(doc, dict):
            logger.warning("Trainboard: %s", problem or f"{self.paths.results} is not a JSON object")
            return None
        return doc
