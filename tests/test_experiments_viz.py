"""Unit tests of VisualizationManager: pure data shaping, PNG files per step, warnings instead of failures."""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import pytest
import torch

from collectors import VisualizationManager
from collectors.experiments import visualization as viz


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_dark_png(path: Path) -> bool:
    from matplotlib.image import imread

    img = imread(path)
    corner = img[2, 2, :3]
    return path.read_bytes()[:8] == PNG_MAGIC and float(corner.mean()) < 0.2


@pytest.mark.parametrize("history,xs,ys", [
    ([3.0, 2.0, 1.0], [0, 1, 2], [3.0, 2.0, 1.0]),
    ([(10, 3.0), (20, 2.0)], [10, 20], [3.0, 2.0]),
    ({20: 2.0, 10: 3.0}, [10, 20], [3.0, 2.0]),
    ([1.0, math.nan, "x", 2.0], [0, 3], [1.0, 2.0]),
    (None, [], []),
], ids=["list", "pairs", "mapping", "junk-dropped", "none"])
def test_as_xy(history: object, xs: list, ys: list) -> None:
    assert viz.as_xy(history) == (xs, ys)


def test_as_xy_accepts_tensors() -> None:
    assert viz.as_xy([torch.tensor(1.5), torch.tensor(0.5)]) == ([0, 1], [1.5, 0.5])


@pytest.mark.parametrize("values,expected", [
    ([1000.0, 1.0], True), ([3.0, 1.0], False), ([1.0, -1.0], False), ([], False),
], ids=["decades", "narrow", "negative", "empty"])
def test_wants_log_scale(values: list[float], expected: bool) -> None:
    assert viz.wants_log_scale(values) is expected


def test_weight_norms_and_spectrum_match_torch() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.LayerNorm(12), torch.nn.Linear(12, 3),
                                torch.nn.Conv1d(2, 4, 3))
    norms = dict(viz.weight_norms(model))
    assert set(norms) == {"0.weight", "2.weight", "3.weight"}  # 1-D LayerNorm weights are not matrices
    assert norms["0.weight"] == pytest.approx(float(model[0].weight.detach().norm()))
    assert [n for n, _ in viz.largest_matrices(model, k=2)] == ["0.weight", "2.weight"]
    for w in (model[0].weight, model[2].weight.T, model[3].weight):
        expected = torch.linalg.svdvals(w.detach().reshape(w.shape[0], -1)).tolist()
        assert viz.singular_values(w) == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_training_plots_png_per_step(tmp_path: Path) -> None:
    vm = VisualizationManager(tmp_path / "visualizations", viz_interval=100)
    assert [s for s in range(0, 301) if vm.should_visualize(s)] == [100, 200, 300]
    out = vm.generate_training_plots(100, [5.0, 3.0, 0.004], {"learning_rate": [1e-3, 5e-4, 1e-4],
                                                              "tokens_per_sec": [(0, 10.0), (2, 12.0)]})
    assert out == [tmp_path / "visualizations" / "training_dynamics_step_100.png"]
    assert is_dark_png(out[0])
    assert not [n for n in os.listdir(tmp_path / "visualizations") if n.startswith(".tmp-")]


def test_model_plots_for_a_transformers_model(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=200, n_positions=32))
    out = VisualizationManager(tmp_path).generate_model_plots(7, model)
    assert [p.name for p in out] == ["weight_norms_step_7.png", "singular_values_step_7.png", "embeddings_step_7.png"]
    assert all(is_dark_png(p) for p in out)


def test_model_without_embeddings_skips_that_plot_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    vm = VisualizationManager(tmp_path)
    with caplog.at_level(logging.WARNING, logger="trainboard"):
        out = vm.generate_model_plots(1, torch.nn.Linear(4, 4))
        vm.generate_model_plots(2, torch.nn.Linear(4, 4))
    assert [p.name for p in out] == ["weight_norms_step_1.png", "singular_values_step_1.png"]
    assert caplog.text.count("has no get_input_embeddings attribute and no nn.Embedding") == 1


def test_non_module_is_skipped_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="trainboard"):
        assert VisualizationManager(tmp_path).generate_model_plots(1, object()) == []
    assert "not a torch module" in caplog.text


def test_drawing_errors_never_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    caplog: pytest.LogCaptureFixture) -> None:
    def broken(*a: object, **k: object) -> None:
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(viz, "_save", broken)
    vm = VisualizationManager(tmp_path)
    with caplog.at_level(logging.WARNING, logger="trainboard"):
        assert vm.generate_training_plots(1, [1.0, 2.0]) == []
        assert vm.generate_model_plots(1, torch.nn.Linear(2, 2)) == []
        assert vm.generate_comparison_plots([{"name": "a", "loss_history": [1.0]}]) == []
    assert "renderer exploded" in caplog.text


def test_empty_histories_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="trainboard"):
        assert VisualizationManager(tmp_path).generate_training_plots(1, [], {}) == []
    assert "empty" in caplog.text


def test_comparison_plot(tmp_path: Path) -> None:
    vm = VisualizationManager(tmp_path / "visualizations")
    exps = [{"name": "Standard Transformer", "loss_history": [7.0, 6.5, 6.0], "metrics": {"learning_rate": [1e-3, 9e-4, 8e-4]}},
            {"name": "Wave GPT", "loss_history": [6.8, 6.2, 5.8], "metrics": {"learning_rate": [1e-3, 9e-4, 8e-4]}}]
    out = vm.generate_comparison_plots(exps)
    assert out == [tmp_path / "visualizations" / "comparison.png"] and is_dark_png(out[0])


@pytest.mark.parametrize("experiments,filename", [
    ([], "comparison.png"), ("not a list", "comparison.png"), ([{"name": "a", "loss_history": [1]}], "../x.png"),
], ids=["empty", "string", "path-escape"])
def test_comparison_bad_input_warns(tmp_path: Path, experiments: object, filename: str,
                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="trainboard"):
        assert VisualizationManager(tmp_path).generate_comparison_plots(experiments, filename) == []  # type: ignore[arg-type]
    assert "comparison plots failed" in caplog.text


def test_bad_constructor_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="viz_interval"):
        VisualizationManager(tmp_path, viz_interval=-5)
    with pytest.raises(ValueError, match="directory path"):
        VisualizationManager("")
