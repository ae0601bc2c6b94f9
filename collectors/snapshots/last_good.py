"""The last good state: what an anomaly snapshot keeps from *before* the fault (issue 11).

An anomaly rule fires after the optimizer step of the bad batch (or later, for a rule with patience), so
the live weights already carry the damage. Every anomaly snapshot therefore also holds, in
``<snapshot>/last_good/``, the newest state from before the fault's onset:

* a Trainer ``checkpoint-*`` at or before it, hard-linked (copied where links are impossible), without
  the optimizer state unless asked (it is twice the weights);
* or the rolling copy: every :data:`ROLLING_COPY_STEPS` optimizer steps the weights are copied into
  preallocated CPU buffers (:class:`RollingCopy`), double-buffered so a copy in progress is never the
  one saved, and a copy being saved is never overwritten.

"Before the onset" means: the state the first suspicious logged step started from, i.e. at or before
the logged step that precedes the onset (:func:`good_limit`), since a logged loss averages the steps
since the previous log.

Used by :mod:`collectors.anomaly.actions` (in-training and standalone) and the benches. Torch is
imported lazily: the standalone monitor never needs it.
"""
from __future__ import annotations

import math
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from collectors import runformat as rf
from collectors.runtime import BYTES_PER_GB
from collectors.snapshots.store import (LAST_GOOD_DIR, OPTIMIZER_STATE_FILE, RNG_STATE_FILE, data_position)

ROLLING_COPY_STEPS = 50
"""Optimizer steps between two rolling copies of the weights (``snapshots.rolling_copy_steps``; 0: off)."""
ROLLING_COPY_MAX_GB = 2.0
"""The rolling copy is on by default for models whose weights take up to this much (each of the two
CPU buffers is this big at most; ``snapshots.rolling_copy_max_gb``)."""
OPTIMIZER_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "optimizer.bin")
"""Files of a Trainer checkpoint left out of ``last_good/`` unless ``save_optimizer`` asks for them."""


# --------------------------------------------------------------------------- choosing (pure)

def good_limit(onset_step: int, logged_steps: Sequence[int]) -> int:
    """The newest step whose weights predate the fault (pure): the last logged train step before the
    onset (its loss was still normal, and so were the batches it averaged), else ``onset - 1``."""
    before = [s for s in logged_steps if s < onset_step]
    return max(before) if before else onset_step - 1


def choose_last_good(limit: int, checkpoints: Sequence[tuple[int, Path]],
                     rolling_steps: Sequence[int]) -> tuple[str, int, Path | None] | None:
    """``("checkpoint", step, path)`` or ``("rolling", step, None)``: the newest state at or before
    ``limit``; a checkpoint wins a tie (linking it costs no disk) (pure). None when there is none."""
    cps = [(s, p) for s, p in checkpoints if s <= limit]
    rolls = [s for s in rolling_steps if s is not None and s <= limit]
    best_cp = max(cps, key=lambda c: c[0]) if cps else None
    best_roll = max(rolls) if rolls else None
    if best_cp is not None and (best_roll is None or best_cp[0] >= best_roll):
        return "checkpoint", best_cp[0], best_cp[1]
    if best_roll is not None:
        return "rolling", best_roll, None
    return None


def missing_reason(limit: int, checkpoints: Sequence[tuple[int, Path]], rolling_steps: Sequence[int],
                   rolling_note: str | None) -> str:
    """Why no last good state exists at or before ``limit``, in words (pure)."""
    parts = [f"no state at or before step {limit}"]
    if checkpoints:
        parts.append(f"the oldest checkpoint is {rf.HF_CHECKPOINT_PREFIX}{min(s for s, _ in checkpoints)}")
    else:
        parts.append("no checkpoint-* exists")
    rolls = [s for s in rolling_steps if s is not None]
    if rolling_note:
        parts.append(rolling_note)
    elif rolls:
        parts.append(f"the oldest rolling copy is of step {min(rolls)}")
    else:
        parts.append("no rolling copy yet")
    return "; ".join(parts)


def position_for(step: int | None, epoch: float | None, sampler_seed: int | None) -> dict[str, Any]:
    """``data_position`` for the weights of ``step`` at ``epoch`` (Trainer's fractional epoch) (pure).

    Trainer's epoch is ``epochs done + steps into this epoch / steps per epoch``, so steps per epoch is
    ``step / epoch`` and the step within the epoch follows.
    """
    in_epoch: int | None = None
    if isinstance(step, int) and isinstance(epoch, (int, float)) and epoch > 0 and math.isfinite(epoch):
        per_epoch = round(step / epoch)
        if per_epoch > 0:
            in_epoch = int(step - math.floor(epoch + 1e-9) * per_epoch)
    elif isinstance(step, int) and epoch in (0, 0.0):
        in_epoch = 0
    return data_position(float(epoch) if isinstance(epoch, (int, float)) else None, in_epoch, sampler_seed)


def checkpoint_position(cp: Path, step: int, sampler_seed: int | None) -> dict[str, Any]:
    """``data_position`` of a Trainer checkpoint, from its ``trainer_state.json``."""
    doc, _ = rf.read_json(cp / rf.HF_TRAINER_STATE)
    epoch = doc.get("epoch") if isinstance(doc, dict) else None
    return position_for(step, epoch if isinstance(epoch, (int, float)) else None, sampler_seed)


# --------------------------------------------------------------------------- writing last_good/

def link_checkpoint(src: Path, dst: Path, *, with_optimizer: bool = False) -> dict[str, Any]:
    """Hard-link (copy where links are impossible) a checkpoint's files into ``dst`` (created).

    Returns the metadata fields it provides: the RNG and optimizer state files, relative to the
    snapshot. The optimizer state is left out unless ``with_optimizer``.
    """
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if not with_optimizer and rel.parts[0] in OPTIMIZER_FILES:
            continue
        target = dst / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.hardlink_to(path)
        except OSError:
            shutil.copy2(path, target)
    rng = next((p for p in sorted(dst.glob("rng_state*.pth"))), None)
    opt = dst / OPTIMIZER_STATE_FILE
    return {"rng_state": f"{LAST_GOOD_DIR}/{rng.name}" if rng is not None else None,
            "optimizer_state": f"{LAST_GOOD_DIR}/{OPTIMIZER_STATE_FILE}" if with_optimizer and opt.is_file() else None}


def save_rng_state(rng: dict[str, Any] | None, dst: Path) -> str | None:
    """Write a rolling copy's RNG state as Trainer's ``rng_state.pth``; returns its snapshot-relative name."""
    if not rng:
        return None
    import torch

    torch.save(rng, dst / RNG_STATE_FILE)
    return f"{LAST_GOOD_DIR}/{RNG_STATE_FILE}"


def capture_rng() -> dict[str, Any]:
    """The RNG states in Trainer's ``rng_state.pth`` layout (python, numpy, cpu, cuda)."""
    import random

    import torch

    out: dict[str, Any] = {"python": random.getstate(), "cpu": torch.random.get_rng_state()}
    try:
        import numpy as np

        out["numpy"] = np.random.get_state()
    except ImportError:
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.random.get_rng_state_all()
    return out


# --------------------------------------------------------------------------- the rolling copy

@dataclass
class _Buffer:
    tensors: dict[str, Any] = field(default_factory=dict)
    step: int | None = None
    """The step of a complete copy; None while empty or being written."""
    leases: int = 0
    rng: dict[str, Any] | None = None
    position: dict[str, Any] | None = None
    alias: dict[str, str] = field(default_factory=dict)
    """Every state-dict name -> the name of the tensor holding its values (tied weights share one)."""


@dataclass
class Lease:
    """A complete rolling copy held for a snapshot writer; :meth:`release` lets the copy reuse it."""

    step: int
    state: dict[str, Any]
    rng: dict[str, Any] | None
    position: dict[str, Any] | None
    _owner: "RollingCopy"
    _buf: _Buffer
    _released: bool = False

    def release(self) -> None:
        """Let the rolling copy reuse the buffer (once; later calls do nothing)."""
        if not self._released:
            self._released = True
            self._owner._release(self._buf)

    def all_finite(self) -> bool:
        """Whether every floating tensor is finite (a NaN that reached the weights before the copy)."""
        import torch

        return all(bool(torch.isfinite(t).all()) for t in self.state.values() if t.is_floating_point())


def state_bytes(model: Any) -> int:
    """Bytes of a model's weights, tensors sharing storage (tied embeddings) once."""
    return tensors_bytes(model.state_dict().values())


def tensors_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of ``tensors`` (a state dict's values), tensors sharing storage (tied embeddings) once."""
    seen: set[tuple[Any, int]] = set()
    total = 0
    for t in tensors:
        key = (t.device, t.untyped_storage().data_ptr())
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


class RollingCopy:
    """A CPU copy of the weights every ``every`` optimizer steps, taken off the training thread.

    At a step end the copy of the weights into the free one of two preallocated CPU buffers starts:
    for a model on CPU a background thread copies while the next forward and backward run (they only
    read the weights); on CUDA the copies are queued on a side stream into pinned buffers
    (``non_blocking``) and a background thread waits for them. Before the next optimizer step
    :meth:`before_optimizer_step` makes sure the copy is done (normally long since), so it never sees
    half-updated weights. A buffer being written is never offered, one leased to a snapshot writer is
    never overwritten (that round is skipped instead).

    Args:
        every: optimizer steps between copies (default 50; 0: off).
        max_bytes: larger models get no rolling copy (default 2 GB); the checkpoint is then the only source.
        say: where the one-line memory note goes (default: print to stderr).

    Example:
        >>> rc = RollingCopy(every=50)  # doctest: +SKIP
        >>> rc.after_step(model, step)  # in on_step_end; rc.before_optimizer_step() in on_pre_optimizer_step
    """

    def __init__(self, every: int = ROLLING_COPY_STEPS, max_bytes: int = int(ROLLING_COPY_MAX_GB * BYTES_PER_GB),
                 say: Callable[[str], Any] | None = None) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 0:
            raise ValueError(f"rolling copy every must be 0 (off) or a positive number of steps; got {every!r}")
        self.every = every
        self.max_bytes = int(max_bytes)
        self.say = say or (lambda msg: print(msg, file=__import__("sys").stderr, flush=True))
        self.buffers = [_Buffer(), _Buffer()]
        self.note: str | None = None if every else "the rolling copy is off (rolling_copy_steps=0)"
        self.enabled = every > 0
        self.copies = 0
        self.skipped = 0
        self.train_thread_s = 0.0
        """Seconds the training thread spent in :meth:`after_step` and :meth:`before_optimizer_step`."""
        self.copy_s = 0.0
        """Seconds the background thread spent copying (CPU time taken beside the training)."""
        self.bytes = 0
        self._lock = threading.Lock()
        self._busy: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: str | None = None

    # ---------------------------------------------------------------- training thread
    def attach(self, model: Any) -> None:
        """Measure the model once: too big turns the copy off (said once), else the memory cost is said."""
        if not self.enabled or self.bytes:
            return
        self.bytes = state_bytes(model)
        if self.bytes > self.max_bytes:
            self.enabled = False
            self.note = (f"the rolling copy is off: the weights take {self.bytes / BYTES_PER_GB:.2f} GB, above "
                         f"rolling_copy_max_gb={self.max_bytes / BYTES_PER_GB:g}")
            self.say(f"Trainboard: {self.note}; anomaly snapshots use the newest checkpoint-* as their last good state")
            return
        self.say(f"Trainboard: last-good rolling copy of the weights every {self.every} steps: 2 x "
                 f"{self.bytes / 2**20:.1f} MB of CPU memory (off: snapshots.rolling_copy_steps=0)")

    def due(self, step: int) -> bool:
        return self.enabled and step >= 0 and step % self.every == 0

    def after_step(self, model: Any, step: int, position: dict[str, Any] | None = None) -> bool:
        """Start a copy of the weights of ``step`` when one is due; returns whether one started."""
        if not self.due(step):
            return False
        t0 = time.perf_counter()
        try:
            return self.start(model, step, position)
        finally:
            self.train_thread_s += time.perf_counter() - t0

    def before_optimizer_step(self) -> None:
        """Wait for a copy in progress (the optimizer is about to change the weights it reads)."""
        busy = self._busy
        if busy is None or busy.is_set():
            return
        t0 = time.perf_counter()
        busy.wait()
        self.train_thread_s += time.perf_counter() - t0

    def start(self, model: Any, step: int, position: dict[str, Any] | None = None) -> bool:
        """Start a copy of the weights of ``step`` now (due or not)."""
        import torch

        self.before_optimizer_step()  # the previous copy (normally done long ago)
        if self.bytes == 0:
            self.attach(model)
            if not self.enabled:
                return False
        with self._lock:
            free = [b for b in self.buffers if b.leases == 0]
            if not free:
                self.skipped += 1
                return False
            buf = min(free, key=lambda b: -1 if b.step is None else b.step)  # the empty or older one
            buf.step = None  # being written: never offered
        src, alias = _dedup_state(model)
        buf.alias = alias
        dst = buf.tensors
        if set(dst) != set(src) or any(dst[k].shape != v.shape or dst[k].dtype != v.dtype for k, v in src.items()):
            dst.clear()
            for k, v in src.items():
                if v.device.type == "cpu":
                    dst[k] = torch.empty_like(v, device="cpu")
                else:
                    dst[k] = torch.empty(v.shape, dtype=v.dtype, device="cpu", pin_memory=torch.cuda.is_available())
        buf.rng = capture_rng()
        buf.position = position
        busy = threading.Event()
        self._busy = busy
        cuda_event = None
        if any(v.device.type == "cuda" for v in src.values()):
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.no_grad(), torch.cuda.stream(stream):
                for k, v in src.items():
                    dst[k].copy_(v.detach(), non_blocking=True)
                cuda_event = torch.cuda.Event()
                cuda_event.record(stream)
            src = {}

        def work() -> None:
            t0 = time.perf_counter()
            try:
                if cuda_event is not None:
                    cuda_event.synchronize()
                else:
                    with torch.no_grad():
                        for k, v in src.items():
                            dst[k].copy_(v.detach())
                with self._lock:
                    buf.step = step
                self.copies += 1
            except Exception as exc:  # noqa: BLE001 - a failed copy leaves the buffer unoffered, training goes on
                self._error = f"{type(exc).__name__}: {exc}"
            finally:
                self.copy_s += time.perf_counter() - t0
                busy.set()

        self._thread = threading.Thread(target=work, name="trainboard-last-good", daemon=True)
        self._thread.start()
        return True

    # ---------------------------------------------------------------- snapshot side
    def steps(self) -> list[int]:
        """The steps of the complete copies held now."""
        with self._lock:
            return [b.step for b in self.buffers if b.step is not None]

    def lease(self, step: int) -> Lease | None:
        """Hold the complete copy of ``step`` for a writer (None when it was overwritten meanwhile)."""
        with self._lock:
            for b in self.buffers:
                if b.step == step:
                    b.leases += 1
                    state = {name: b.tensors[first] for name, first in b.alias.items()}
                    return Lease(step, state, b.rng, b.position, self, b)
        return None

    def _release(self, buf: _Buffer) -> None:
        with self._lock:
            buf.leases = max(0, buf.leases - 1)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=60)


def _dedup_state(model: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """``(unique tensors, alias)``: the model's state dict with tensors that share storage (tied
    weights) copied once, and every name mapped to the name holding its values."""
    out: dict[str, Any] = {}
    alias: dict[str, str] = {}
    seen: dict[tuple[Any, int, int, tuple[int, ...], tuple[int, ...]], str] = {}
    for k, v in model.state_dict().items():
        key = (v.device, v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()))
        first = seen.setdefault(key, k)
        alias[k] = first
        if first == k:
            out[k] = v
    return out, alias
