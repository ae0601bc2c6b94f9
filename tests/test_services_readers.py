"""The reading layer: detection and reading of Trainboard runs, experiment dirs, real HF Trainer output dirs
and real TensorBoard event dirs into one run model, live (re-read on change) and cheap when unchanged."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from collectors import (CheckpointManager, ConfigTracker, MetricsLogger, Monitor, create_experiment_directory)
from collectors import runformat as rf
from services import model, readers
from services.catalog import RunCatalog, discover
from services.model import RunKind



# --------------------------------------------------------------------------- pure helpers

@pytest.mark.parametrize("kind,name,expected", [
    ("train", "loss", ("train", "loss")),
    ("eval", "eval_loss", ("eval", "loss")),
    ("train", "eval_loss", ("eval", "loss")),
    (None, "eval/loss", ("eval", "loss")),
    (None, "train/loss", ("train", "loss")),
    (None, "Loss/train", ("train", "loss")),
    (None, "loss/val", ("eval", "loss")),
    ("train", "val_loss", ("eval", "loss")),
    ("eval", "loss", ("eval", "loss")),
    ("train", "learning_rate", ("train", "learning_rate")),
    ("train", "epoch", None),
    ("eval", "eval_runtime", None),
    ("eval", "eval_samples_per_second", None),
], ids=lambda v: str(v))
def test_normalize_metric(kind: str | None, name: str, expected: tuple[str, str] | None) -> None:
    assert model.normalize_metric(kind, name) == expected


def test_flatten() -> None:
    assert model.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}, "f": None}) == \
        {"a.b": 1, "a.c.d": [1, 2], "e": {}, "f": None}


@pytest.mark.parametrize("finished,age,expected", [
    (True, 1e6, "finished"), (False, 5.0, "training"), (False, 1e6, "stopped"), (False, None, "stopped"),
], ids=["finished", "recent", "old", "unknown"])
def test_live_state(finished: bool, age: float | None, expected: str) -> None:
    now = 1e9
    assert model.live_state(finished, None if age is None else now - age, now) == expected


@pytest.mark.parametrize("status,expected", [
    ({"state": "training", "updated_at": 1e9 - 10}, "training"),
    ({"state": "training", "updated_at": 1e9 - 10_000}, "stale"),
    ({"state": "crashed", "updated_at": 1e9 - 10_000}, "crashed"),
    ({}, None), (None, None),
], ids=["live", "stale", "crashed", "empty", "none"])
def test_status_state(status: dict | None, expected: str | None) -> None:
    assert model.status_state(status, 1e9) == expected


def test_best_by_metric_and_resume_commands(tmp_path: Path) -> None:
    assert readers.best_by_metric([("a", {"val_loss": 2.0}), ("b", {"val_loss": 1.5}), ("c", {})]) == "b"
    assert readers.best_by_metric([("a", {}), ("b", {"val_loss": math.nan})]) is None
    cmd = {"argv": ["train.py", "--lr", "1e-3"], "cwd": "/work/my dir", "python": "/usr/bin/python3"}
    assert readers.experiment_resume_command(tmp_path, 20, True, cmd) == "cd '/work/my dir' && /usr/bin/python3 train.py --lr 1e-3"
    line = readers.experiment_resume_command(tmp_path, 10, False, cmd)
    assert f"CheckpointManager({str(tmp_path)!r})" in line and "load_checkpoint(step=10)" in line
    assert readers.hf_resume_command(Path("/o/checkpoint-4")) == "trainer.train(resume_from_checkpoint='/o/checkpoint-4')"


# --------------------------------------------------------------------------- Trainboard and experiment dirs

def make_trainboard_run(root: Path) -> None:
    with Monitor(base_dir=root, run_config={"lr": 1e-3, "batch_size": 8}, anomaly=False) as mon:  # counts below are exact
        for step in range(1, 11):
            mon.log(step, loss=3.0 - step * 0.1, learning_rate=1e-3)
            if step % 5 == 0:
                mon.log(step, eval_loss=2.5 - step * 0.05)
    with rf.JsonlWriter(rf.RunPaths.of(root).alerts) as w:
        for i in range(3):
            w.append(rf.make_record("alert", step=i, severity="high", message="x"))
    (root / "snapshots" / "snap-1").mkdir(parents=True)
    (root / "snapshots" / ".tmp-snap-2").mkdir()


def test_trainboard_run(tmp_path: Path) -> None:
    run = tmp_path / "tb-run"
    make_trainboard_run(run)
    s = readers.open_run(run)
    assert isinstance(s, readers.TrainboardRun) and s.kind is RunKind.TRAINBOARD
    summary = s.summary()
    assert (summary.state, summary.last_step, summary.alert_count, summary.snapshot_count) == ("finished", 10, 3, 1)
    assert summary.best_eval_loss == pytest.approx(2.0) and summary.duration_s is not None and summary.duration_s >= 0
    ser = s.compare_series()
    assert ser["train/loss"].steps == list(range(1, 11)) and ser["eval/loss"].steps == [5, 10]
    assert all(w is not None for w in ser["train/loss"].wall_times)
    assert s.config() == {"lr": 1e-3, "batch_size": 8}
    assert s.results()["best_eval_loss"] == pytest.approx(2.0) and s.results()["last_step"] == 10


def make_experiment(root: Path, name: str, lr: float, val: list[float], loss_scale: float = 4.0) -> Path:
    dirs = create_experiment_directory(root, name)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    ConfigTracker(dirs["root"]).save_config({"lr": lr, "batch_size": 32}, model, {"name": "toy"})
    ml = MetricsLogger(dirs["logs"], log_interval=1)
    mgr = CheckpointManager(dirs["root"], save_interval=10, keep_last_n=3)
    for step in range(1, 31):
        ml.log_metrics(step, {"loss": loss_scale / step ** 0.5, "learning_rate": lr})
        if step % 10 == 0:
            v = val[step // 10 - 1]
            ml.log_metrics(step, {"val_loss": v})
            mgr.save_checkpoint(step, model, None, [], {}, metrics={"val_loss": v})
    return dirs["root"]


def test_experiment_dir(tmp_path: Path) -> None:
    root = make_experiment(tmp_path, "exp_a", 1e-3, [3.0, 2.0, 2.5])
    s = readers.open_run(root)
    assert isinstance(s, readers.ExperimentRun)
    summary = s.summary()
    assert summary.kind == "experiment" and summary.state == "training"  # no results.json yet, written just now
    assert summary.last_step == 30 and summary.best_eval_loss == 2.0 and summary.checkpoint_count == 3
    cfg = s.config()
    assert cfg["lr"] == 1e-3 and cfg["dataset_info.name"] == "toy" and cfg["num_parameters"] == 10
    assert "timestamp" not in cfg and "command" not in cfg
    rows = s.checkpoints()
    assert [(r.step, r.is_latest, r.is_best) for r in rows] == [(10, False, False), (20, False, True), (30, True, False)]
    assert rows[-1].resume_command.startswith("cd ") and "load_checkpoint(step=10)" in rows[0].resume_command
    assert not s.refresh()  # nothing changed: no re-read
    ConfigTracker(root).save_results({"val_loss": 2.0, "perplexity": 7.4}, "checkpoints/checkpoint_step_30.pt")
    assert s.refresh()
    assert s.summary().state == "finished" and s.results() == {"val_loss": 2.0, "perplexity": 7.4}
    assert [r.is_best for r in s.checkpoints()] == [False, False, True]  # results.json names the best


def test_trainboard_source_reads_only_new_lines(tmp_path: Path) -> None:
    ml = MetricsLogger(tmp_path / "run", log_interval=1)
    ml.log_metrics(1, {"loss": 2.0})
    s = readers.open_run(tmp_path / "run")
    assert s.refresh() and s.compare_series()["train/loss"].values == [2.0]
    assert not s.refresh()
    v = s.version
    ml.log_metrics(2, {"loss": 1.5})
    ml.log_metrics(2, {"loss": 1.4})  # a resumed run re-logs a step: the last value wins
    assert s.refresh() and s.version == v + 1
    assert s.compare_series()["train/loss"].steps == [1, 2] and s.compare_series()["train/loss"].values == [2.0, 1.4]
    assert s._metrics.state.offset == ml.metrics_file.stat().st_size  # incremental tail, not a re-read


# --------------------------------------------------------------------------- a real HF Trainer output dir

def tiny_trainer(output_dir: Path, callbacks: list | None = None):
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16))
    g = torch.Generator().manual_seed(0)

    def rows(n: int) -> list[dict[str, torch.Tensor]]:
        out = []
        for _ in range(n):
            ids = torch.randint(0, 64, (16,), generator=g)
            ids[1::2] = (ids[0::2] + 1) % 64  # learnable: every second token follows the previous
            out.append({"input_ids": ids, "labels": ids.clone()})
        return out

    args = TrainingArguments(output_dir=str(output_dir), max_steps=12, per_device_train_batch_size=8,
                             per_device_eval_batch_size=8, learning_rate=5e-3, logging_steps=2, eval_strategy="steps",
                             eval_steps=4, save_strategy="steps", save_steps=4, load_best_model_at_end=True,
                             metric_for_best_model="eval_loss", report_to=[], use_cpu=True, disable_tqdm=True,
                             seed=0, dataloader_num_workers=0)
    return Trainer(model=model, args=args, train_dataset=rows(96), eval_dataset=rows(16), callbacks=callbacks or [])


@pytest.mark.integration
def test_real_hf_trainer_output_dir_live(tmp_path: Path) -> None:
    from transformers import TrainerCallback

    out = tmp_path / "base" / "hf-run"
    catalog = RunCatalog(tmp_path / "base", watch=False, rescan_interval_s=0.0)
    seen: list[tuple[int | None, int, str]] = []

    class Observer(TrainerCallback):
        """Test instrumentation only: looks at the dashboard's reader after each save (the training is plain)."""

        def on_save(self, args, state, control, **kwargs):
            s = catalog.get("hf-run")
            assert s is not None and s.kind is RunKind.HUGGINGFACE
            seen.append((s.summary().last_step, len(s.checkpoints()), s.summary().state))

    trainer = tiny_trainer(out, [Observer()])
    trainer.train()
    # live: each save was picked up by a re-read, with no change to the training
    assert seen == [(4, 1, "training"), (8, 2, "training"), (12, 3, "finished")]
    truth = trainer.state.log_history
    s = catalog.get("hf-run")
    train_truth = [(e["step"], e["loss"]) for e in truth if "loss" in e]
    eval_truth = [(e["step"], e["eval_loss"]) for e in truth if "eval_loss" in e]
    ser = s.compare_series()
    assert list(zip(ser["train/loss"].steps, ser["train/loss"].values)) == train_truth
    assert list(zip(ser["eval/loss"].steps, ser["eval/loss"].values)) == eval_truth
    assert set(ser) >= {"train/loss", "train/learning_rate", "train/grad_norm", "eval/loss"}
    summary = s.summary()
    assert summary.best_eval_loss == min(v for _, v in eval_truth) and summary.last_step == 12
    rows = s.checkpoints()
    assert [r.step for r in rows] == [4, 8, 12] and rows[-1].is_latest
    assert [r.is_best for r in rows] == [Path(r.path).name == Path(trainer.state.best_model_checkpoint).name for r in rows]
    assert sum(r.is_best for r in rows) == 1 and all(r.size_mb > 0 for r in rows)
    assert rows[0].resume_command == f"trainer.train(resume_from_checkpoint={str((out / 'checkpoint-4').resolve())!r})"
    cfg = s.config()
    assert cfg["train_batch_size"] == 8 and cfg["max_steps"] == 12 and cfg["model.n_layer"] == 2
    assert summary.state == "finished"  # global_step reached max_steps
    assert not s.refresh()  # unchanged: cheap
    trainer.save_state()  # output_dir/trainer_state.json, with the final summary entry
    assert s.refresh()
    assert s.results()["train_runtime"] > 0 and s.summary().duration_s == s.results()["train_runtime"]


# --------------------------------------------------------------------------- a real TensorBoard event dir

@pytest.mark.integration
def test_real_summarywriter_event_dir_live(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    logdir = tmp_path / "base" / "tb-run"
    writer = SummaryWriter(log_dir=str(logdir))
    for step in range(0, 20, 2):
        writer.add_scalar("train/loss", 5.0 / (step + 1), step)
        writer.add_scalar("Learning_rate/train", 1e-3, step)
    writer.add_scalar("eval/loss", 1.25, 10)
    writer.flush()
    assert readers.detect_kind(logdir) is RunKind.TENSORBOARD
    catalog = RunCatalog(tmp_path / "base", watch=False, rescan_interval_s=0.0)
    s = catalog.get("tb-run")
    ser = s.compare_series()
    assert ser["train/loss"].steps == list(range(0, 20, 2))
    assert ser["train/loss"].values == pytest.approx([5.0 / (i + 1) for i in range(0, 20, 2)], rel=1e-6)
    assert ser["eval/loss"].values == [1.25] and "train/learning_rate" in ser
    assert all(isinstance(w, float) and w > 1e9 for w in ser["train/loss"].wall_times)
    summary = s.summary()
    assert (summary.kind, summary.last_step, summary.best_eval_loss, summary.state) == ("tensorboard", 18, 1.25, "training")
    assert not s.refresh()
    writer.add_scalar("eval/loss", 0.75, 20)  # the training goes on: no change to it, the source follows
    writer.flush()
    assert s.refresh()
    assert s.summary().best_eval_loss == 0.75 and s.summary().last_step == 20
    writer.close()


def test_damaged_event_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    d = tmp_path / "tb"
    d.mkdir()
    (d / "events.out.tfevents.123.host").write_bytes(b"\x00garbage" * 10)
    s = readers.open_run(d)
    summary = s.summary()
    assert summary.kind == "tensorboard" and summary.last_step is None  # nothing readable, still listed


# --------------------------------------------------------------------------- discovery

def test_discovery_of_every_kind(tmp_path: Path) -> None:
    base = tmp_path / "base"
    make_trainboard_run(base / "tb-run")
    make_experiment(base / "experiments", "exp_a", 1e-3, [3.0, 2.0, 2.5])
    hf = base / "hf-run"
    (hf / "checkpoint-5").mkdir(parents=True)
    rf.write_json_atomic(hf / "checkpoint-5" / "trainer_state.json",
                         {"global_step": 5, "max_steps": 10, "log_history": [{"loss": 1.0, "step": 5}]})
    (hf / "runs" / "Jan01").mkdir(parents=True)
    (hf / "runs" / "Jan01" / "events.out.tfevents.1.h").write_bytes(b"")  # belongs to the HF run
    (base / "tblogs" / "run1").mkdir(parents=True)
    (base / "tblogs" / "run1" / "events.out.tfevents.1.h").write_bytes(b"")
    (base / "junk" / "deeper").mkdir(parents=True)
    (base / ".hidden").mkdir()
    found = [(rid, kind.value) for rid, kind, _ in discover(base)[0]]
    assert found == [("experiments/exp_a", "experiment"), ("hf-run", "huggingface"), ("tb-run", "trainboard"),
                     ("tblogs/run1", "tensorboard")]
    assert [(rid, k.value) for rid, k, _ in discover(base / "tb-run")[0]] == [(".", "trainboard")]


def test_catalog_keeps_readers_and_rejects_unknown_ids(tmp_path: Path) -> None:
    base = tmp_path / "base"
    make_trainboard_run(base / "a")
    cat = RunCatalog(base, watch=False, rescan_interval_s=0.0)
    first = cat.get("a")
    assert first is not None and cat.get("a") is first
    assert cat.get("../a") is None and cat.get("") is None and cat.get(None) is None
    v1 = cat.version()
    assert cat.version() == v1
    make_trainboard_run(base / "b")
    assert [s.run_id for s in cat.runs()] == ["a", "b"]
    shutil.rmtree(base / "a")
    assert [s.run_id for s in cat.runs()] == ["b"]


def test_half_written_files_are_problems(tmp_path: Path) -> None:
    run = tmp_path / "exp"
    ml = MetricsLogger(run)
    ml.log_metrics(1, {"loss": 1.0})
    (run / "config.json").write_text('{"experiment_id": "exp", "hardware"')  # being written
    (run / "results.json").write_text("")
    (run / "checkpoints").mkdir()
    with open(ml.metrics_file, "ab") as fh:
        fh.write(b"{broken\n")
    s = readers.open_run(run)
    summary = s.summary()
    assert summary.kind == "experiment" and summary.last_step == 1
    text = " ".join(summary.problems)
    assert "malformed" in text and "config.json" in text and "results.json" in text
