"""Skip ranges: which batches a resumed training must never train on (issue 11, "Recovery").

Stdlib only, so both the plain-loop :class:`collectors.monitor.Monitor` (``should_skip``) and the
Trainer callback :class:`collectors.skip_batches.SkipBatches` use the same parsing and the same
step-to-batch arithmetic, and the dashboard's Recover panel and ``trainboard resume`` validate a range
exactly as the training will.

A range is written ``"A-B"`` (or a single step ``"A"``) in **optimizer steps as logged** (Trainer's
``global_step``, the x axis of every chart), both ends included. Under gradient accumulation one step is
``gradient_accumulation_steps`` micro-batches, all of which are skipped. The step numbers refer to the
data order of the run that went wrong (the one whose chart shows the spike).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

__all__ = ["SkipRange", "parse_skip_range", "parse_skip_ranges", "epoch_skip_positions", "SkippingBatchSampler"]

_RANGE = re.compile(r"^\s*(\d+)\s*(?:(?:-|\.\.|:|to)\s*(\d+)\s*)?$")


@dataclass(frozen=True)
class SkipRange:
    """Optimizer steps ``first``..``last`` (both included, 1-based like Trainer's logged steps)."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if not (isinstance(self.first, int) and isinstance(self.last, int)) or isinstance(self.first, bool) \
                or isinstance(self.last, bool):
            raise ValueError(f"a skip range needs whole step numbers; got {self.first!r}-{self.last!r}")
        if self.first < 1:
            raise ValueError(f"a skip range starts at step 1 or later (steps are counted from 1); got {self.first}")
        if self.last < self.first:
            raise ValueError(f"skip range {self.first}-{self.last} ends before it starts; write it as "
                             f"{self.last}-{self.first}")

    def __contains__(self, step: object) -> bool:
        return isinstance(step, int) and self.first <= step <= self.last

    @property
    def count(self) -> int:
        """How many optimizer steps the range covers."""
        return self.last - self.first + 1

    def __str__(self) -> str:
        return f"{self.first}-{self.last}" if self.last != self.first else str(self.first)

    def to_list(self) -> list[int]:
        """``[first, last]``: the JSON form (status file, trainer_state.json)."""
        return [self.first, self.last]


def parse_skip_range(value: Any) -> SkipRange:
    """A :class:`SkipRange` from ``"31-40"``, ``"31"``, ``(31, 40)``, ``range(31, 41)`` or a ``SkipRange``.

    Raises:
        ValueError: naming the problem ("ends before it starts", "not a step range") for anything else.
    """
    if isinstance(value, SkipRange):
        return value
    if isinstance(value, range):
        if value.step != 1 or len(value) == 0:
            raise ValueError(f"a skip range must be a non-empty range with step 1; got {value!r}")
        return SkipRange(value.start, value.stop - 1)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                   for v in value):
        return SkipRange(int(value[0]), int(value[1]))
    if isinstance(value, int) and not isinstance(value, bool):
        return SkipRange(value, value)
    if isinstance(value, str):
        m = _RANGE.match(value)
        if m is None:
            raise ValueError(f"{value!r} is not a step range: write FIRST-LAST in optimizer steps, e.g. 31-40")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        return SkipRange(first, last)
    raise ValueError(f"{value!r} is not a step range: write FIRST-LAST in optimizer steps, e.g. '31-40'")


def parse_skip_ranges(value: Any) -> list[SkipRange]:
    """One or several ranges (``"31-40,90-95"``, a list of ranges), sorted; overlapping ones are merged."""
    if value is None:
        return []
    if isinstance(value, str):
        items: Sequence[Any] = [v for v in value.split(",") if v.strip()]
        if not items:
            raise ValueError("an empty skip range was given: write FIRST-LAST, e.g. 31-40")
    elif isinstance(value, (SkipRange, range, int)) or (isinstance(value, tuple) and len(value) == 2
                                                       and all(isinstance(v, int) for v in value)):
        items = [value]
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        items = [value]
    ranges = sorted((parse_skip_range(v) for v in items), key=lambda r: r.first)
    merged: list[SkipRange] = []
    for r in ranges:
        if merged and r.first <= merged[-1].last + 1:
            merged[-1] = SkipRange(merged[-1].first, max(merged[-1].last, r.last))
        else:
            merged.append(r)
    return merged


def step_skipped(step: int, ranges: Sequence[SkipRange]) -> bool:
    """Whether optimizer step ``step`` lies in one of ``ranges``. Pure."""
    return any(step in r for r in ranges)


def epoch_skip_positions(ranges: Sequence[SkipRange], epoch: int, batches_per_epoch: int,
                         accumulation: int = 1) -> frozenset[int]:
    """The micro-batch positions (0-based, within ``epoch``) that belong to the skipped steps. Pure.

    This mirrors Trainer's own arithmetic (``transformers.Trainer.set_initial_training_values``): an epoch
    of ``batches_per_epoch`` micro-batches has ``ceil(batches_per_epoch / accumulation)`` optimizer steps,
    the last one taking the remainder; step ``s`` (1-based, counted over the whole run) is update
    ``(s - 1) % steps_per_epoch`` of epoch ``(s - 1) // steps_per_epoch``.
    """
    if batches_per_epoch <= 0 or accumulation <= 0:
        return frozenset()
    steps_per_epoch = max(-(-batches_per_epoch // accumulation), 1)
    lo_step, hi_step = epoch * steps_per_epoch + 1, (epoch + 1) * steps_per_epoch
    out: set[int] = set()
    for r in ranges:
        first, last = max(r.first, lo_step), min(r.last, hi_step)
        for s in range(first, last + 1):
            u = s - 1 - epoch * steps_per_epoch
            out.update(range(u * accumulation, min((u + 1) * accumulation, batches_per_epoch)))
    return frozenset(out)


class SkippingBatchSampler:
    """A batch sampler that yields its inner batch sampler's batches except the skipped positions.

    Its ``len()`` is the inner one's, on purpose: Trainer derives the steps per epoch, the epoch of a
    resumed step and the batches to fast-forward from that length, and all of it must stay what it was
    in the run being recovered. The epoch being iterated is set by :class:`SkipBatches` at each
    ``on_epoch_begin`` (``epoch``); everything else (``sampler``, ``batch_size``, ``set_epoch``...) is the
    inner sampler's, so accelerate's seeding and ``skip_first_batches`` see the sampler they expect.

    Args:
        inner: the dataloader's batch sampler.
        ranges: the optimizer steps to skip.
        accumulation: Trainer's ``gradient_accumulation_steps`` (micro-batches per optimizer step).
    """

    def __init__(self, inner: Any, ranges: Sequence[SkipRange], accumulation: int = 1) -> None:
        self.inner = inner
        self.ranges = list(ranges)
        self.accumulation = max(int(accumulation), 1)
        self.epoch = 0
        self.skipped = 0
        """Micro-batches dropped so far (all epochs)."""

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[Any]:
        drop = epoch_skip_positions(self.ranges, self.epoch, len(self.inner), self.accumulation)
        for pos, batch in enumerate(self.inner):
            if pos in drop:
                self.skipped += 1
                continue
            yield batch

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)
