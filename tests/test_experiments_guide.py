"""The guide's examples (../shared/guides/004: experiment monitoring system) run as written, on a tiny model.

Each test pastes the guide's code with only our import path (``from collectors import ...``) and the
guide's ``...`` placeholders filled in; the lines between ``# guide:`` and ``# end guide`` are the
guide's. A tiny next-token model on random tokens stands in for the guide's GPT.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn


VOCAB, SEQ, BATCH = 32, 8, 4


class TinyLM(nn.Module):
    """Embedding + linear next-token model: small enough for 1000 steps in about a second."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 16)
        self.head = nn.Linear(16, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(x))


def make_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step % 50)
    x = torch.randint(0, VOCAB, (BATCH, SEQ), generator=g)
    return x, (x * 3 + 1) % VOCAB  # a learnable mapping


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> torch.Tensor:
    x, y = make_batch(step)
    loss = nn.functional.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # the guide writes to the relative directory "experiments"
    torch.manual_seed(0)
    return tmp_path


def test_quick_start(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = TinyLM()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    num_steps = 1001
    loss_history: list[float] = []
    lr_history: list[float] = []
    perplexity_history: list[float] = []
    metrics = {"learning_rate": lr_history, "perplexity": perplexity_history}
    config = {'lr': 0.001, 'batch_size': 32, 'steps': num_steps}  # the guide's `config` placeholder

    # guide: Quick Start / Basic Usage
    from collectors import (
        CheckpointManager,
        MetricsLogger,
        VisualizationManager,
        ConfigTracker,
        generate_experiment_id,
        create_experiment_directory
    )

    # Create experiment directory structure
    experiment_id = generate_experiment_id("wave_rgd_qfe")
    dirs = create_experiment_directory("experiments", experiment_id)

    # Initialize monitoring components
    checkpoint_mgr = CheckpointManager(
        experiment_dir=dirs['root'],
        save_interval=1000,
        keep_last_n=3
    )

    metrics_logger = MetricsLogger(
        log_dir=dirs['logs'],
        log_interval=10
    )

    viz_manager = VisualizationManager(
        viz_dir=dirs['visualizations'],
        viz_interval=1000
    )

    config_tracker = ConfigTracker(experiment_dir=dirs['root'])

    # Save initial configuration
    config_tracker.save_config(
        config={'lr': 0.001, 'batch_size': 32, 'steps': num_steps},
        model=model,
        dataset_info={'name': 'TinyShakespeare', 'num_tokens': 1000000}
    )

    # Training loop
    for step in range(num_steps):
        # ... training code ...
        loss = train_step(model, optimizer, step)
        perplexity = math.exp(loss.item())
        loss_history.append(loss.item())
        lr_history.append(optimizer.param_groups[0]['lr'])
        perplexity_history.append(perplexity)

        # Log metrics
        if metrics_logger.should_log(step):
            metrics_logger.log_metrics(step, {
                'loss': loss.item(),
                'learning_rate': optimizer.param_groups[0]['lr'],
                'perplexity': perplexity
            })

        # Save checkpoint
        if checkpoint_mgr.should_checkpoint(step):
            checkpoint_mgr.save_checkpoint(
                step, model, optimizer, loss_history, config
            )

        # Generate visualizations
        if viz_manager.should_visualize(step):
            viz_manager.generate_training_plots(step, loss_history, metrics)
            viz_manager.generate_model_plots(step, model)

    # Save final results
    config_tracker.save_results(
        final_metrics={'val_loss': 4.5, 'perplexity': 90.0},
        best_checkpoint='checkpoints/checkpoint_step_5000.pt',
        generation_samples=['The theory of...', 'In the beginning...']
    )
    # end guide

    # guide: List all checkpoints / Load all metrics / Get latest step / Get summary statistics
    checkpoints = checkpoint_mgr.list_checkpoints()
    for ckpt in checkpoints:
        print(f"Step {ckpt['step']}: {ckpt['size_mb']:.2f} MB, {ckpt['modified']}")
    all_metrics = metrics_logger.load_metrics()
    for entry in all_metrics:
        print(f"Step {entry['step']}: Loss={entry['loss']:.4f}")
    latest_step = metrics_logger.get_latest_step()
    print(f"Last logged step: {latest_step}")
    summary = metrics_logger.get_metrics_summary()
    print(f"Total steps: {summary['total_steps']}")
    print(f"Final loss: {summary['loss_final']:.4f}")
    print(f"Min loss: {summary['loss_min']:.4f}")
    print(f"Mean loss: {summary['loss_mean']:.4f}")
    # end guide

    root = Path(dirs["root"])
    assert root.resolve().parent == in_tmp.resolve() / "experiments" and experiment_id.startswith("wave_rgd_qfe_")
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == [
        "checkpoint_latest.pt", "checkpoint_step_1000.pt", "manifest.json"]
    assert len(all_metrics) == 101 and latest_step == 1000 and summary["total_steps"] == 1000
    assert summary["loss_final"] < all_metrics[0]["loss"]  # it learned
    pngs = sorted(p.name for p in (root / "visualizations").iterdir())
    assert pngs == ["embeddings_step_1000.png", "singular_values_step_1000.png", "training_dynamics_step_1000.png",
                    "weight_norms_step_1000.png"]
    out = capsys.readouterr().out
    assert "Step 1000: 0.0" in out and "Last logged step: 1000" in out and "Total steps: 1000" in out
    cfg = json.loads((root / "config.json").read_text())
    assert cfg["config"]["batch_size"] == 32 and cfg["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert json.loads((root / "results.json").read_text())["final_metrics"] == {"val_loss": 4.5, "perplexity": 90.0}
    ckpt = checkpoint_mgr.load_checkpoint(step=1000)
    assert ckpt["step"] == 1000 and len(ckpt["loss_history"]) == 1001


def _train_and_checkpoint(steps: int, save_interval: int) -> tuple[TinyLM, list[float]]:
    from collectors import CheckpointManager

    model = TinyLM()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    mgr = CheckpointManager("experiments/run", save_interval=save_interval)
    loss_history: list[float] = []
    for step in range(steps):
        loss_history.append(train_step(model, optimizer, step).item())
        if mgr.should_checkpoint(step):
            mgr.save_checkpoint(step, model, optimizer, loss_history, {"lr": 0.01})
    return model, loss_history


def test_automatic_resumption(capsys: pytest.CaptureFixture[str]) -> None:
    from collectors import CheckpointManager

    trained, _ = _train_and_checkpoint(steps=25, save_interval=10)  # checkpoints at 10 and 20
    model = TinyLM()  # a fresh process would build a fresh model
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    checkpoint_mgr = CheckpointManager("experiments/run", save_interval=10)
    num_steps = 30
    seen: list[int] = []

    # guide: Automatic Resumption
    # Always resume from latest checkpoint if available
    checkpoint = checkpoint_mgr.load_latest_checkpoint()

    if checkpoint:
        model.load_state_dict(checkpoint['model_state_dict'])
        optimizer.load_state_dict(checkpoint['optimizer_state_dict'])
        start_step = checkpoint['step'] + 1
        loss_history = checkpoint['loss_history']
        print(f"✓ Resumed from step {checkpoint['step']}")
    else:
        start_step = 0
        loss_history = []
        print("✓ Starting new training run")

    # Continue training
    for step in range(start_step, num_steps):
        # ... training code ...
        seen.append(step)
        loss_history.append(train_step(model, optimizer, step).item())
    # end guide

    assert "✓ Resumed from step 20" in capsys.readouterr().out
    assert start_step == 21 and seen == list(range(21, 30)) and len(loss_history) == 30

    empty = CheckpointManager("experiments/other")
    assert empty.load_latest_checkpoint() is None  # the guide's "Starting new training run" branch


def test_loss_continuity_check(capsys: pytest.CaptureFixture[str]) -> None:
    from collectors import CheckpointManager

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    criterion = nn.MSELoss()
    batch, targets = torch.randn(32, 6), torch.randn(32, 1)
    mgr = CheckpointManager("experiments/cont", save_interval=5)
    losses: list[float] = []
    for step in range(1, 11):
        loss = criterion(net(batch), targets)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if mgr.should_checkpoint(step):
            mgr.save_checkpoint(step, net, opt, losses, {})

    checkpoint_mgr = CheckpointManager("experiments/cont", save_interval=5)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    # guide: Verifying Loss Continuity
    checkpoint = checkpoint_mgr.load_latest_checkpoint()

    if checkpoint:
        model.load_state_dict(checkpoint['model_state_dict'])
        optimizer.load_state_dict(checkpoint['optimizer_state_dict'])
        start_step = checkpoint['step'] + 1
        loss_history = checkpoint['loss_history']

        # Verify loss continuity
        expected_loss = loss_history[-1]

        # Run one forward pass to check
        model.eval()
        with torch.no_grad():
            outputs = model(batch)
            current_loss = criterion(outputs, targets).item()
        model.train()

        loss_diff = abs(current_loss - expected_loss)
        if loss_diff > 0.1:
            print(f"⚠️  Warning: Loss discontinuity detected!")
            print(f"   Expected: {expected_loss:.4f}, Got: {current_loss:.4f}")
        else:
            print(f"✓ Loss continuity verified: {current_loss:.4f}")
    # end guide

    out = capsys.readouterr().out
    assert start_step == 11 and "✓ Loss continuity verified" in out
    # the restored model is the trained one exactly, not merely close
    with torch.no_grad():
        assert current_loss == criterion(net(batch), targets).item()


def test_conditional_best_checkpointing() -> None:
    from collectors import CheckpointManager

    model = TinyLM()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    checkpoint_mgr = CheckpointManager("experiments/best", keep_last_n=3)
    loss_history: list[float] = []
    config = {"lr": 0.01}
    best_val_loss = float("inf")
    val_losses = {10: 3.0, 20: 2.5, 30: 2.7, 40: 2.4, 50: 2.6, 60: 2.1, 70: 2.0}
    printed = []

    for step, val_loss in val_losses.items():
        loss_history.append(train_step(model, optimizer, step).item())
        # guide: Conditional Checkpointing
        # Save checkpoint only when validation loss improves
        if val_loss < best_val_loss:
            best_val_loss = val_loss
            checkpoint_mgr.save_checkpoint(
                step, model, optimizer, loss_history, config
            )
            printed.append(f"✓ Saved best checkpoint at step {step}")
        # end guide

    assert [c["step"] for c in checkpoint_mgr.list_checkpoints()] == [40, 60, 70]
    assert checkpoint_mgr.load_latest_checkpoint()["step"] == 70 and best_val_loss == 2.0
    assert printed[-1] == "✓ Saved best checkpoint at step 70"


def test_minimal_integration(in_tmp: Path) -> None:
    model = TinyLM()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    config = {"lr": 0.01}
    dataset_info = {"name": "random tokens"}
    loss_history: list[float] = []

    # guide: Minimal Integration
    # Add at the top
    from collectors import (
        CheckpointManager, MetricsLogger, VisualizationManager, ConfigTracker,
        generate_experiment_id, create_experiment_directory
    )

    # Before training loop
    experiment_id = generate_experiment_id("my_experiment")
    dirs = create_experiment_directory("experiments", experiment_id)

    checkpoint_mgr = CheckpointManager(dirs['root'])
    metrics_logger = MetricsLogger(dirs['logs'])
    viz_manager = VisualizationManager(dirs['visualizations'])
    config_tracker = ConfigTracker(dirs['root'])

    config_tracker.save_config(config, model, dataset_info)
    # end guide

    for step in range(1001):
        loss = train_step(model, optimizer, step)
        loss_history.append(loss.item())
        # guide: In training loop - add these 3 lines
        if metrics_logger.should_log(step):
            metrics_logger.log_metrics(step, {'loss': loss.item()})

        if checkpoint_mgr.should_checkpoint(step):
            checkpoint_mgr.save_checkpoint(step, model, optimizer, loss_history, config)

        if viz_manager.should_visualize(step):
            viz_manager.generate_training_plots(step, loss_history, {})
        # end guide

    final_val_loss = loss_history[-1]
    # guide: After training
    config_tracker.save_results({'val_loss': final_val_loss})
    # end guide

    root = Path(dirs["root"])
    assert (root / "checkpoints" / "checkpoint_step_1000.pt").is_file()
    assert (root / "visualizations" / "training_dynamics_step_1000.png").is_file()
    assert metrics_logger.get_latest_step() == 1000 and len(metrics_logger.load_metrics()) == 101
    assert json.loads((root / "results.json").read_text())["final_metrics"]["val_loss"] == final_val_loss


def test_experiment_comparison(capsys: pytest.CaptureFixture[str]) -> None:
    from collectors import ConfigTracker, create_experiment_directory

    for name, val in (("a", 4.4), ("b", 4.2), ("c", 4.6)):
        ConfigTracker(create_experiment_directory("experiments", name)["root"]).save_results({"val_loss": val})

    # guide: Experiment Comparison (our results live in each experiment's results.json)
    from collectors import ResultsParser, ResultsAggregator

    # Parse results from multiple experiments
    parser = ResultsParser("experiments")
    experiments = parser.parse()

    # Aggregate and compare
    aggregator = ResultsAggregator()
    aggregator.load_from_parser(parser)

    # Generate comparison table
    print(aggregator.generate_comparison_table())

    # Get summary statistics
    summary = aggregator.generate_summary_statistics()
    print(f"Mean validation loss: {summary['val_loss']['mean']:.4f}")
    print(f"Best validation loss: {summary['val_loss']['min']:.4f}")
    # end guide

    out = capsys.readouterr().out
    assert len(experiments) == 3 and "| b | 4.2 |" in out
    assert "Mean validation loss: 4.4000" in out and "Best validation loss: 4.2000" in out


def test_multi_gpu_dataparallel_on_cpu() -> None:
    from collectors import CheckpointManager

    checkpoint_mgr = CheckpointManager("experiments/dp")
    base = TinyLM()
    optimizer = torch.optim.AdamW(base.parameters(), lr=0.01)
    loss_history: list[float] = []
    config: dict = {}
    step = 1

    # guide: Multi-GPU Support
    # CheckpointManager handles DataParallel automatically
    model = nn.DataParallel(base)

    # Saves model.module.state_dict() automatically
    checkpoint_mgr.save_checkpoint(step, model, optimizer, loss_history, config)
    # end guide

    saved = {k: v.clone() for k, v in base.state_dict().items()}
    with torch.no_grad():
        for prm in base.parameters():
            prm.add_(1.0)  # the weights move on after the save
    # guide: Load works the same way
    checkpoint = checkpoint_mgr.load_latest_checkpoint()
    model.load_state_dict(checkpoint['model_state_dict'])
    # end guide
    assert set(checkpoint["model_state_dict"]) == set(base.state_dict())  # saved without "module." prefixes
    assert all(torch.equal(base.state_dict()[k], v) for k, v in saved.items())
    assert set(model.state_dict()) == {"module." + k for k in saved}  # the wrapper itself is untouched
    with pytest.raises(RuntimeError, match="Missing key"):  # a wrong dict is still refused loudly
        model.load_state_dict({"nonsense": torch.zeros(1)})
    CheckpointManager.restore(checkpoint, model)
    assert os.path.basename(checkpoint_mgr.list_checkpoints()[0]["path"]) == "checkpoint_step_1.pt"
