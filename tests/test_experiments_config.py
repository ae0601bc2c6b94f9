"""Unit tests of experiment ids and directories, ConfigTracker, and results aggregation."""
from __future__ import annotations

import argparse
import json
import logging
import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from collectors import (ConfigTracker, ResultsAggregator, ResultsParser, create_experiment_directory,
                        generate_experiment_id)
from collectors.experiments import config_tracker as ctk
from collectors.experiments import results as res
from collectors.experiments.layout import safe_name



# --------------------------------------------------------------------------- ids and directories

@pytest.mark.parametrize("name,expected", [
    ("wave_rgd_qfe_lr0.001_bs32", "wave_rgd_qfe_lr0.001_bs32"), ("my exp/1", "my_exp_1"), ("../etc", "etc"),
    ("  ünï cödé ", "n_c_d"),
], ids=["plain", "spaces-slash", "dotdot", "unicode"])
def test_safe_name(name: str, expected: str) -> None:
    assert safe_name(name) == expected


@pytest.mark.parametrize("name", ["", "///", "..", 5], ids=["empty", "slashes", "dotdot", "int"])
def test_unusable_names_are_rejected(name: object) -> None:
    with pytest.raises(ValueError, match="experiment name"):
        generate_experiment_id(name)  # type: ignore[arg-type]


def test_experiment_id_is_timestamped_and_unique() -> None:
    a = generate_experiment_id("run", now=0.0)
    b = generate_experiment_id("run", now=0.0)
    assert re.fullmatch(r"run_\d{8}_\d{6}_[0-9a-f]{4}", a) and a != b


def test_create_experiment_directory(tmp_path: Path) -> None:
    dirs = create_experiment_directory(tmp_path / "experiments", "exp_1")
    assert set(dirs) == {"root", "checkpoints", "logs", "visualizations"}
    assert dirs["root"] == tmp_path / "experiments" / "exp_1"
    assert all(p.is_dir() for p in dirs.values())
    assert create_experiment_directory(tmp_path / "experiments", "exp_1") == dirs  # idempotent


@pytest.mark.parametrize("exp_id", ["../escape", "a/b", "", ".."], ids=["dotdot", "slash", "empty", "parent"])
def test_create_rejects_unsafe_ids(tmp_path: Path, exp_id: str) -> None:
    with pytest.raises(ValueError):
        create_experiment_directory(tmp_path, exp_id)
    assert not (tmp_path.parent / "escape").exists()


# --------------------------------------------------------------------------- ConfigTracker

@dataclass
class TrainCfg:
    lr: float = 1e-3
    layers: int = 2


def test_save_and_load_config(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    model[1].weight.requires_grad_(False)
    tracker = ConfigTracker(tmp_path / "exp")
    path = tracker.save_config({"lr": 1e-3, "nested": {"steps": 10}, "inf": math.inf}, model,
                               {"name": "TinyShakespeare", "num_tokens": 1000000})
    doc = json.loads(path.read_text())
    assert doc == tracker.load_config() | {"config": doc["config"]}
    cfg = tracker.load_config()
    assert cfg["experiment_id"] == "exp" and re.match(r"\d{4}-\d\d-\d\dT", cfg["timestamp"])
    assert cfg["config"] == {"lr": 1e-3, "nested": {"steps": 10}, "inf": math.inf}
    assert cfg["dataset_info"]["name"] == "TinyShakespeare"
    assert cfg["num_parameters"] == 4 * 8 + 8 + 8 * 2 + 2
    assert cfg["model"]["trainable_parameters"] == 4 * 8 + 8 + 2
    hw = cfg["hardware"]
    assert hw["torch_version"] == str(torch.__version__) and hw["cpu_count"] >= 1 and hw["ram_gb"] > 0
    assert hw["cpu"] and "gpu_model" in hw and "cuda_version" in hw
    if not torch.cuda.is_available():
        assert hw["gpu_model"] is None and hw["gpu_count"] == 0
    assert cfg["command"]["argv"] and cfg["command"]["cwd"]


@pytest.mark.parametrize("config", [TrainCfg(), argparse.Namespace(lr=1e-3, layers=2)], ids=["dataclass", "namespace"])
def test_config_objects_become_json(tmp_path: Path, config: object) -> None:
    tracker = ConfigTracker(tmp_path)
    tracker.save_config(config)
    assert tracker.load_config()["config"] == {"lr": 1e-3, "layers": 2}


def test_git_hash_inside_and_outside_a_repository(tmp_path: Path) -> None:
    assert ctk.git_info(tmp_path) == {"git_hash": "unknown", "git_dirty": None}
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "f").write_text("1")
    subprocess.run([*git, "add", "f"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert ctk.git_info(repo) == {"git_hash": head, "git_dirty": False}
    (repo / "f").write_text("2")
    assert ctk.git_info(repo)["git_dirty"] is True


def test_missing_config_warns_and_returns_none(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="trainboard"):
        assert ConfigTracker(tmp_path).load_config() is None
        (tmp_path / "results.json").write_text("{half")
        assert ConfigTracker(tmp_path).load_results() is None
    assert "does not exist" in caplog.text and "not valid JSON" in caplog.text


def test_save_results(tmp_path: Path) -> None:
    tracker = ConfigTracker(tmp_path / "exp")
    tracker.save_results({"val_loss": 4.5, "perplexity": 90.0}, "checkpoints/checkpoint_step_5000.pt",
                         ["The theory of...", "In the beginning..."])
    doc = tracker.load_results()
    assert doc["final_metrics"] == {"val_loss": 4.5, "perplexity": 90.0}
    assert doc["best_checkpoint"] == "checkpoints/checkpoint_step_5000.pt"
    assert doc["generation_samples"] == ["The theory of...", "In the beginning..."]
    tracker.save_results({"val_loss": 4.4})
    assert tracker.load_results()["best_checkpoint"] is None
    with pytest.raises(ValueError, match="final_metrics"):
        tracker.save_results([4.5])  # type: ignore[arg-type]


def test_unwritable_results_warn_and_go_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "results.json").mkdir()  # cannot be replaced by a file
    with caplog.at_level(logging.WARNING, logger="trainboard"):
        assert ConfigTracker(tmp_path).save_results({"val_loss": 1.0}) is None
    assert "writing results.json failed" in caplog.text


# --------------------------------------------------------------------------- results

def write_results(root: Path, name: str, metrics: dict) -> None:
    ConfigTracker(root / name).save_results(metrics, f"checkpoints/checkpoint_step_{len(name)}.pt")


def test_parser_and_aggregator(tmp_path: Path) -> None:
    write_results(tmp_path, "b_run", {"val_loss": 4.0, "perplexity": 55.0})
    write_results(tmp_path, "a_run", {"val_loss": 5.0, "perplexity": 150.0, "note": "lr|x"})
    write_results(tmp_path / "nested", "c_run", {"val_loss": math.nan})
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text('{"no": "metrics"}')
    parser = ResultsParser(tmp_path)
    exps = parser.parse()
    assert [e.name for e in exps] == ["a_run", "b_run", "c_run"]
    assert exps[0]["final_metrics"]["val_loss"] == 5.0 and exps[0].best_checkpoint.endswith("_5.pt")
    assert len(parser.problems) == 1 and "final_metrics" in parser.problems[0]
    agg = ResultsAggregator()
    assert agg.load_from_parser(parser) == 3
    table = agg.generate_comparison_table()
    assert table.splitlines()[0] == "| Experiment | val_loss | perplexity | note |"
    assert "| a_run | 5 | 150 | lr\\|x |" in table and "| c_run | nan | — | — |" in table
    stats = agg.generate_summary_statistics()
    assert stats["val_loss"] == {"mean": 4.5, "min": 4.0, "max": 5.0, "std": pytest.approx(math.sqrt(0.5)), "count": 2}
    assert stats["perplexity"]["std"] == pytest.approx(67.175144, rel=1e-6)
    assert "note" not in stats
    assert agg.generate_comparison_table(["perplexity"]).splitlines()[0] == "| Experiment | perplexity |"


def test_parser_accepts_a_single_file_or_experiment(tmp_path: Path) -> None:
    write_results(tmp_path, "one", {"val_loss": 1.0})
    assert [e.name for e in ResultsParser(tmp_path / "one").parse()] == ["one"]
    assert [e.name for e in ResultsParser(tmp_path / "one" / "results.json").parse()] == ["one"]
    with pytest.raises(ValueError, match="does not exist"):
        ResultsParser(tmp_path / "missing")


@pytest.mark.parametrize("rows,expected", [
    ([{"a": 1.0}], {"a": {"mean": 1.0, "min": 1.0, "max": 1.0, "std": 0.0, "count": 1}}),
    ([{"a": math.inf}, {"a": True}], {}),
    ([], {}),
], ids=["single", "non-finite-and-bool", "none"])
def test_summary_statistics_edge_cases(rows: list, expected: dict) -> None:
    assert res.summary_statistics(rows) == expected


def test_add_experiment_rejects_non_mapping() -> None:
    with pytest.raises(ValueError, match="dict"):
        ResultsAggregator().add_experiment("x", [1])  # type: ignore[arg-type]
