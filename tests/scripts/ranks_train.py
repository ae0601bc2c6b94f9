"""Run under ``torchrun`` (any nodes × processes): a real DDP Trainer (gloo, CPU) with MonitorCallback and
per-rank health, plus fault injectors chosen by environment variables (issue 13's proof tests):

* ``TB_STRAGGLER_RANK`` / ``TB_STRAGGLER_S``: that rank sleeps this long at each step begin;
* ``TB_NAN_RANK`` / ``TB_NAN_STEP``: that rank's loss value is NaN from that step on (its gradient stays
  finite, so the other ranks and rank 0's logged loss stay finite: a NaN the others average away);
* ``TB_STALL_STEP`` / ``TB_STALL_S``: the data loader blocks this long before that step's batch;
* ``TB_STRAGGLER_FROM``: the straggler starts sleeping at this step (default 1); ``TB_STRAGGLER_MARKER``:
  a file it writes the wall time of its first sleep to;
* ``TB_TIMING``: a directory where each rank writes the seconds its per-rank health hooks took on the
  training thread, and the training's seconds and steps (bench/bench_ranks.py);
* ``TB_MAX_STEPS``, ``TB_LOG_STEPS``, ``TB_DDP_TIMEOUT``, ``TB_SILENT_S``, ``TB_STALL_MIN_S``, ``TB_RANKS=0``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import Trainer, TrainerCallback  # noqa: E402

from collectors import MonitorCallback  # noqa: E402
from collectors.demo import build_demo, training_arguments  # noqa: E402
from collectors.ranks import RanksConfig, RanksPlugin  # noqa: E402


def env_int(name: str, default: int = -1) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


class Straggler(TrainerCallback):
    def __init__(self, seconds: float, from_step: int = 1, marker: str | None = None) -> None:
        self.seconds, self.from_step, self.marker = seconds, from_step, marker

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
        if state.global_step + 1 < self.from_step:
            return
        if self.marker:
            Path(self.marker).write_text(str(time.time()))
            self.marker = None
        time.sleep(self.seconds)


class TimedRanksPlugin(RanksPlugin):
    """The real plugin, with the time of every hook it runs on the training thread added up."""

    spent = 0.0

    def _timed(name):  # noqa: N805 - a decorator factory inside the class body
        def wrapper(self, *a):  # noqa: ANN001, ANN002, ANN202
            t0 = time.perf_counter()
            try:
                return getattr(RanksPlugin, name)(self, *a)
            finally:
                TimedRanksPlugin.spent += time.perf_counter() - t0
        return wrapper

    on_step_begin = _timed("on_step_begin")
    on_step_end = _timed("on_step_end")
    on_rank_record = _timed("on_rank_record")
    on_phase = _timed("on_phase")
    del _timed

    def on_start(self, monitor):  # noqa: ANN001, ANN201
        super().on_start(monitor)
        fwd = self.meter.forward_end

        def timed_forward_end(t, loss=None):  # noqa: ANN001, ANN202
            t0 = time.perf_counter()
            fwd(t, loss)
            TimedRanksPlugin.spent += time.perf_counter() - t0
        self.meter.forward_end = timed_forward_end  # type: ignore[method-assign]


class NanLoss(TrainerCallback):
    """From ``step`` on, the forward's loss *value* becomes NaN while its gradient stays the real one."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001, ANN003, ANN201
        def hook(module, _args, output):  # noqa: ANN001, ANN202
            if module.training and state.global_step + 1 >= self.step and getattr(output, "loss", None) is not None:
                loss = output.loss
                output.loss = loss + (torch.full_like(loss, float("nan")) - loss).detach()
            return output

        model.register_forward_hook(hook)


class StallingData(torch.utils.data.Dataset):
    """The training set, except that fetching one item blocks once (a hung data loader)."""

    def __init__(self, base: torch.utils.data.Dataset, at_item: int, seconds: float) -> None:
        self.base, self.at_item, self.seconds, self.done = base, at_item, seconds, False

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):  # noqa: ANN204
        if not self.done and self._count >= self.at_item:
            self.done = True
            marker = os.environ.get("TB_STALL_MARKER")
            if marker:
                Path(marker).write_text(str(time.time()))
            time.sleep(self.seconds)
        self._count += 1
        return self.base[i]

    _count = 0


def main() -> None:
    base = Path(sys.argv[1])
    max_steps = env_int("TB_MAX_STEPS", 24)
    setup = build_demo(seed=0, n_train=2000, n_eval=16, n_layer=1, n_embd=32)
    rank = int(os.environ.get("RANK", "0"))
    train = setup.train
    callbacks: list = []  # injectors first: their forward hooks must run before the collector's
    if rank == env_int("TB_STRAGGLER_RANK"):
        callbacks.append(Straggler(env_float("TB_STRAGGLER_S", 0.3), env_int("TB_STRAGGLER_FROM", 1),
                                   os.environ.get("TB_STRAGGLER_MARKER")))
    if rank == env_int("TB_NAN_RANK"):
        callbacks.append(NanLoss(env_int("TB_NAN_STEP", 5)))
    config = RanksConfig(silent_after_s=env_float("TB_SILENT_S", 30.0), stall_min_s=env_float("TB_STALL_MIN_S", 60.0),
                         heartbeat_s=1.0)
    timing = os.environ.get("TB_TIMING")
    on = os.environ.get("TB_RANKS", "1") != "0"
    callbacks.append(MonitorCallback(base_dir=base / "run", anomaly=False,
                                     plugins=[TimedRanksPlugin(config)] if timing and on else [],
                                     ranks=config if on else False))
    batch = 4
    if env_int("TB_STALL_STEP") > 0:
        train = StallingData(train, env_int("TB_STALL_STEP") * batch, env_float("TB_STALL_S", 30.0))
    extra = {}
    if os.environ.get("WORLD_SIZE", "1") != "1":
        extra["ddp_backend"] = "gloo"
        extra["ddp_timeout"] = env_int("TB_DDP_TIMEOUT", 60)
    args = training_arguments(str(base / "hf"), max_steps, logging_steps=env_int("TB_LOG_STEPS", 2),
                              eval_steps=10_000, eval_strategy="no", batch_size=batch, **extra)
    trainer = Trainer(model=setup.model, args=args, train_dataset=train, processing_class=setup.tokenizer,
                      callbacks=callbacks)
    t0 = time.perf_counter()
    trainer.train()
    if timing:
        Path(timing).mkdir(parents=True, exist_ok=True)
        (Path(timing) / f"rank-{rank}.json").write_text(json.dumps(
            {"hook_s": TimedRanksPlugin.spent, "train_s": time.perf_counter() - t0, "steps": trainer.state.global_step}))
    if trainer.is_world_process_zero():
        (base / "log_history.json").write_text(json.dumps(trainer.state.log_history))


if __name__ == "__main__":
    main()
