"""Unit tests of collectors.experiments.checkpoints: atomic saves, keep-last-N, verified loading, fallbacks."""
from __future__ import annotations

import errno
import logging
import os
import random
from pathlib import Path

import pytest
import torch

from collectors import CheckpointManager, capture_rng_state, restore_rng_state
from collectors import runformat as rf
from collectors.experiments import checkpoints as ck



def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def entry(name: str, step: int, mtime: float) -> ck.CheckpointEntry:
    return ck.CheckpointEntry(step=step, path=Path(name), size_bytes=1, modified=mtime)


# --------------------------------------------------------------------------- pure helpers

@pytest.mark.parametrize("keep,mtimes,just,expected", [
    (3, (1, 2, 3, 4), "c4", ["c1"]),
    (1, (1, 2, 3, 4), "c4", ["c3", "c2", "c1"]),
    (None, (1, 2, 3, 4), "c4", []),
    # a branch resumed from an early step writes c1 last: it survives, with the next most recent (c4)
    (2, (100, 2, 3, 4), "c1", ["c3", "c2"]),
    # even with a clock that went backwards the file just written is kept
    (1, (1, 2, 3, 0), "c4", ["c3", "c2", "c1"]),
], ids=["keep3", "keep1", "keep-all", "branch", "clock-skew"])
def test_plan_cleanup(keep: int | None, mtimes: tuple[int, ...], just: str, expected: list[str]) -> None:
    entries = [entry(f"c{i + 1}", (i + 1) * 10, float(t)) for i, t in enumerate(mtimes)]
    assert [p.name for p in ck.plan_cleanup(entries, keep, just)] == expected


def test_load_order_puts_latest_first_then_newest() -> None:
    entries = [entry("a", 10, 1.0), entry("b", 20, 3.0), entry("c", 30, 2.0)]
    assert [e.path.name for e in ck.load_order(entries, "c")] == ["c", "b", "a"]
    assert [e.path.name for e in ck.load_order(entries, None)] == ["b", "c", "a"]


@pytest.mark.parametrize("obj,step,ok", [
    ({"step": 5, "model_state_dict": {}}, 5, True),
    ({"step": 5, "model_state_dict": {}}, 6, False),
    ({"step": 5}, 5, False),
    ([1, 2], None, False),
], ids=["valid", "wrong-step", "no-model", "not-dict"])
def test_validate_payload(obj: object, step: int | None, ok: bool) -> None:
    assert (ck.validate_payload(obj, step) is None) is ok


@pytest.mark.parametrize("kwargs,match", [
    ({"save_interval": 0}, "save_interval"),
    ({"save_interval": 2.5}, "save_interval"),
    ({"keep_last_n": 0}, "keep_last_n"),
    ({"keep_last_n": "3"}, "keep_last_n"),
], ids=["interval-zero", "interval-float", "keep-zero", "keep-str"])
def test_constructor_rejects_bad_settings(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CheckpointManager(tmp_path, **kwargs)


def test_constructor_rejects_file_and_empty(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        CheckpointManager(f)
    with pytest.raises(ValueError, match="directory path"):
        CheckpointManager("  ")


def test_should_checkpoint(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, save_interval=5)
    assert [s for s in range(0, 21) if mgr.should_checkpoint(s)] == [5, 10, 15, 20]


# --------------------------------------------------------------------------- saving and listing

def test_save_list_and_keep_last_n(tmp_path: Path) -> None:
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mgr = CheckpointManager(tmp_path, save_interval=10, keep_last_n=2)
    for step in (10, 20, 30):
        path = mgr.save_checkpoint(step, model, opt, [1.0, 0.5], {"lr": 1e-3})
        assert path == tmp_path / "checkpoints" / f"checkpoint_step_{step}.pt"
    listed = mgr.list_checkpoints()
    assert [c["step"] for c in listed] == [20, 30]
    assert all(c["size_mb"] > 0 and isinstance(c["modified"], str) for c in listed)
    assert [c["is_latest"] for c in listed] == [False, True]
    latest = tmp_path / "checkpoints" / "checkpoint_latest.pt"
    assert latest.is_symlink() and os.readlink(latest) == "checkpoint_step_30.pt"
    assert not [n for n in os.listdir(tmp_path / "checkpoints") if n.startswith(rf.TMP_PREFIX)]
    manifest = ck.read_manifest(tmp_path / "checkpoints")
    assert set(manifest) == {"checkpoint_step_20.pt", "checkpoint_step_30.pt"}


def test_keep_last_never_deletes_the_one_just_written(tmp_path: Path) -> None:
    model = tiny_model()
    mgr = CheckpointManager(tmp_path, keep_last_n=1)
    for step in (100, 200):
        mgr.save_checkpoint(step, model)
    # a resumed branch writes a lower step than what is on disk: it must survive its own cleanup
    assert mgr.save_checkpoint(150, model) is not None
    assert [c["step"] for c in mgr.list_checkpoints()] == [150]
    assert mgr.load_latest_checkpoint()["step"] == 150


def test_checkpoint_contents_and_restore(tmp_path: Path) -> None:
    model = tiny_model(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    sched.step()
    mgr = CheckpointManager(tmp_path)
    mgr.save_checkpoint(7, model, opt, [torch.tensor(2.0), 1.5], {"lr": 0.1, "nested": {"a": [1, 2]}},
                        scheduler=sched, metrics={"val_loss": 0.7}, extra={"epoch": 2, "batch": 3})
    ckpt = mgr.load_checkpoint(7)
    assert ckpt["step"] == 7 and ckpt["loss_history"] == [2.0, 1.5]
    assert ckpt["config"] == {"lr": 0.1, "nested": {"a": [1, 2]}}
    assert ckpt["extra"] == {"epoch": 2, "batch": 3} and ckpt["metrics"] == {"val_loss": 0.7}
    assert mgr.list_checkpoints()[0]["metrics"] == {"val_loss": 0.7}
    fresh = tiny_model(2)
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    assert CheckpointManager.restore(ckpt, fresh, opt2, sched2) == 8
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.05)
    assert sched2.last_epoch == 1


def test_dataparallel_is_unwrapped(tmp_path: Path) -> None:
    model = tiny_model()
    mgr = CheckpointManager(tmp_path)
    mgr.save_checkpoint(1, torch.nn.DataParallel(model))
    ckpt = mgr.load_latest_checkpoint()
    assert not any(k.startswith("module.") for k in ckpt["model_state_dict"])
    target = torch.nn.DataParallel(tiny_model(5))
    CheckpointManager.restore(ckpt, target)  # restore unwraps the target as well
    assert torch.equal(target.module[0].weight, model[0].weight)


def test_non_main_process_writes_nothing(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path / "exp", main_process=False)
    assert mgr.save_checkpoint(5, tiny_model()) is None
    assert not (tmp_path / "exp").exists()


def test_bad_step_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non-negative integer"):
        CheckpointManager(tmp_path).save_checkpoint(-1, tiny_model())


def test_resaving_the_same_step_stays_loadable(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path)
    mgr.save_checkpoint(5, tiny_model(1))
    m2 = tiny_model(2)
    mgr.save_checkpoint(5, m2)
    ckpt = mgr.load_latest_checkpoint()
    assert torch.equal(ckpt["model_state_dict"]["0.weight"], m2[0].weight)
    assert len(ck.read_manifest(tmp_path / "checkpoints")["checkpoint_step_5.pt"]["versions"]) == 1


def test_pointer_file_where_symlinks_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_symlink(*a: object, **k: object) -> None:
        raise OSError(errno.EPERM, "symlinks not permitted")

    monkeypatch.setattr(ck.os, "symlink", no_symlink)
    mgr = CheckpointManager(tmp_path)
    mgr.save_checkpoint(3, tiny_model())
    mgr.save_checkpoint(6, tiny_model())
    latest = tmp_path / "checkpoints" / "checkpoint_latest.pt"
    assert latest.is_file() and not latest.is_symlink()
    assert latest.read_bytes().startswith(ck.POINTER_MAGIC)
    assert ck.latest_target(tmp_path / "checkpoints") == "checkpoint_step_6.pt"
    assert mgr.load_latest_checkpoint()["step"] == 6


# --------------------------------------------------------------------------- damaged files

@pytest.fixture()
def three_checkpoints(tmp_path: Path) -> CheckpointManager:
    mgr = CheckpointManager(tmp_path, keep_last_n=3)
    for step in (10, 20, 30):
        mgr.save_checkpoint(step, tiny_model(step))
    return mgr


def test_truncated_latest_falls_back_with_warning(three_checkpoints: CheckpointManager,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    p = three_checkpoints.checkpoint_dir / "checkpoint_step_30.pt"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="trainboard"):
        ckpt = three_checkpoints.load_latest_checkpoint()
    assert ckpt["step"] == 20
    assert "checkpoint_latest.pt -> checkpoint_step_30.pt" in caplog.text and "truncated" in caplog.text


def test_bit_flip_inside_tensor_data_is_detected(three_checkpoints: CheckpointManager,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    p = three_checkpoints.checkpoint_dir / "checkpoint_step_30.pt"
    data = bytearray(p.read_bytes())
    mid = len(data) // 2  # inside the tensor payload: torch.load alone would accept it
    data[mid: mid + 8] = bytes(b ^ 0xFF for b in data[mid: mid + 8])
    p.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="trainboard"):
        ckpt = three_checkpoints.load_latest_checkpoint()
    assert ckpt["step"] == 20
    assert "checkpoint_step_30.pt" in caplog.text and "CRC-32" in caplog.text


def test_garbage_without_manifest_falls_back(three_checkpoints: CheckpointManager,
                                             caplog: pytest.LogCaptureFixture) -> None:
    (three_checkpoints.checkpoint_dir / "manifest.json").unlink()
    (three_checkpoints.checkpoint_dir / "checkpoint_step_30.pt").write_bytes(b"not a checkpoint at all")
    (three_checkpoints.checkpoint_dir / "checkpoint_step_20.pt").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="trainboard"):
        ckpt = three_checkpoints.load_latest_checkpoint()
    assert ckpt["step"] == 10
    assert "checkpoint_step_30.pt" in caplog.text and "checkpoint_step_20.pt" in caplog.text


def test_all_damaged_or_none_gives_none(tmp_path: Path, three_checkpoints: CheckpointManager) -> None:
    assert CheckpointManager(tmp_path / "empty").load_latest_checkpoint() is None
    for p in three_checkpoints.checkpoint_dir.glob("checkpoint_step_*.pt"):
        p.write_bytes(b"x")
    assert three_checkpoints.load_latest_checkpoint() is None
    assert three_checkpoints.load_checkpoint(10) is None
    assert three_checkpoints.load_checkpoint(999) is None


def test_renamed_checkpoint_with_wrong_step_is_rejected(three_checkpoints: CheckpointManager) -> None:
    d = three_checkpoints.checkpoint_dir
    (d / "manifest.json").unlink()
    os.replace(d / "checkpoint_step_10.pt", d / "checkpoint_step_40.pt")
    assert three_checkpoints.load_checkpoint(40) is None


# --------------------------------------------------------------------------- full disk

def test_disk_full_warns_keeps_training_and_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    mgr = CheckpointManager(tmp_path)
    model = tiny_model()
    mgr.save_checkpoint(10, model)
    real_open = open

    class FullDisk:
        """A real file that accepts 512 bytes (so a partial temp file exists) and then reports ENOSPC."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            self._fh = real_open(*args, **kwargs)
            self._written = 0

        def write(self, data: bytes) -> int:
            room = 512 - self._written
            if len(data) > room:
                self._fh.write(data[:max(room, 0)])
                self._fh.flush()
                self._written = 512
                raise OSError(errno.ENOSPC, "No space left on device")
            self._written += len(data)
            return self._fh.write(data)

        def __getattr__(self, name: str) -> object:
            return getattr(self._fh, name)

        def __enter__(self) -> "FullDisk":
            return self

        def __exit__(self, *exc: object) -> None:
            self._fh.close()

    monkeypatch.setattr(ck, "open", FullDisk, raising=False)
    with caplog.at_level(logging.WARNING, logger="trainboard"):
        assert mgr.save_checkpoint(20, model) is None
        assert mgr.save_checkpoint(30, model) is None
    assert "disk full" in caplog.text and caplog.text.count("disk full") == 1  # reported once
    assert mgr.failed_saves == 2
    names = os.listdir(mgr.checkpoint_dir)
    assert sorted(n for n in names if n.endswith(".pt")) == ["checkpoint_latest.pt", "checkpoint_step_10.pt"]
    assert not [n for n in names if n.startswith(rf.TMP_PREFIX)]
    assert mgr.load_latest_checkpoint()["step"] == 10
    monkeypatch.delattr(ck, "open")
    assert mgr.save_checkpoint(40, model) is not None  # space freed: saving works again
    assert mgr.load_latest_checkpoint()["step"] == 40


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    d = tmp_path / "checkpoints"
    d.mkdir()
    dead = d / f"{rf.TMP_PREFIX}checkpoint_step_5.pt.999999999.abcd1234"
    mine = d / f"{rf.TMP_PREFIX}checkpoint_step_6.pt.{os.getpid()}.abcd1234"
    dead.write_bytes(b"partial")
    mine.write_bytes(b"in progress")
    CheckpointManager(tmp_path)
    assert not dead.exists() and mine.exists()


# --------------------------------------------------------------------------- random state

def test_rng_state_round_trip() -> None:
    import numpy as np

    state = capture_rng_state()
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    restore_rng_state(state)
    b = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    assert a == b


def test_rng_state_survives_weights_only_load(tmp_path: Path) -> None:
    import numpy as np  # noqa: F401 - makes capture include the NumPy state

    mgr = CheckpointManager(tmp_path)
    mgr.save_checkpoint(1, tiny_model())
    expected = (random.random(), float(torch.rand(1)))
    ckpt = mgr.load_latest_checkpoint()
    restore_rng_state(ckpt["rng_state"])
    assert (random.random(), float(torch.rand(1))) == expected
