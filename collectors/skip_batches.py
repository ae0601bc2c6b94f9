"""``SkipBatches``: resume a Trainer run so that a range of batches is never trained on (issue 11).

Why a batch-sampler wrapper installed by a callback, and not a callback that skips steps: Trainer has no
"skip this step" control, and every way of skipping inside the step (a zero loss, zeroed gradients)
still calls ``optimizer.step()``, which moves Adam's moments and, through the momentum, the weights.
The only skip that leaves the optimizer untouched is one where the batch never reaches the model. So
at ``on_train_begin`` the callback replaces the train dataloader's batch sampler with a
:class:`collectors.recovery.SkippingBatchSampler` that drops the micro-batches of the skipped steps;
nothing else about data loading changes (same sampler, same seeding, same workers, same collator).

What the numbers mean:

* the range is in optimizer steps as logged (``global_step``, the chart's x axis), both ends included,
  and refers to the data order of the run that went wrong: ``SkipBatches("31-40")`` drops exactly the
  batches that run trained on at steps 31..40 (``10 × gradient_accumulation_steps`` micro-batches);
* **the logged step keeps counting** (as W&B, Lightning and TensorBoard users expect): no step number
  is missing; step 31 of the resumed run trains on the batch the bad run used at step 41, and so on.
  The epoch holding the range therefore has that many fewer steps; a run bounded by epochs (or whose
  ``max_steps`` ends exactly at an epoch end) finishes that many steps earlier;
* Trainer's own resume (``resume_from_checkpoint``) fast-forwards past the batches the checkpoint has
  already seen *of the wrapped stream*, so resuming from a checkpoint before the range (the normal case:
  the last good state) gives exactly the original data up to the range, then the data after it. A later
  resume of the recovered run, from a checkpoint in the same epoch, is exact when it is given the same
  ``SkipBatches`` (the range is also recorded in every checkpoint's ``trainer_state.json``, under
  ``stateful_callbacks``). Trainer assumes full epochs when it computes the position of a checkpoint in
  a *later* epoch, so such a resume is off by the skipped count (documented, warned).

Needs a map-style dataset (a dataloader with a batch sampler); an ``IterableDataset`` has no positions
to drop and is refused with a clear message.
"""
from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

from collectors.recovery import SkippingBatchSampler, SkipRange, parse_skip_ranges

log = logging.getLogger("trainboard")

__all__ = ["SkipBatches"]


def base_loader(loader: Any) -> Any:
    """The torch ``DataLoader`` that really iterates: accelerate's ``DataLoaderShard`` is an adapter that
    forwards attribute reads (``batch_sampler`` included) to its ``base_dataloader`` and iterates that."""
    seen = 0
    while loader is not None and "base_dataloader" in getattr(loader, "__dict__", {}) and seen < 8:
        loader = loader.__dict__["base_dataloader"]
        seen += 1
    return loader


class SkipBatches(TrainerCallback, ExportableState):
    """Never train on the batches of the given optimizer steps (recovery from a bad-batch range).

    Args:
        steps: the steps to skip: ``"31-40"``, ``"31-40,90-95"``, ``(31, 40)``, ``range(31, 41)``, or a
            list of those; steps as logged, both ends included (see the module docstring).

    Raises:
        ValueError: for a malformed range (at construction) or a dataloader without a batch sampler (at
            train begin, before any step runs).

    Example:
        >>> trainer.add_callback(SkipBatches("31-40"))                                   # doctest: +SKIP
        >>> trainer.train(resume_from_checkpoint="runs/exp1/snapshots/anomaly_x/last_good")  # doctest: +SKIP
    """

    def __init__(self, steps: Any = None) -> None:
        self.ranges: list[SkipRange] = parse_skip_ranges(steps)
        if not self.ranges:
            raise ValueError("SkipBatches(steps=...) needs a range of optimizer steps, e.g. SkipBatches('31-40')")
        self.sampler: SkippingBatchSampler | None = None
        self._next_epoch = 0

    @property
    def spec(self) -> str:
        """The ranges as text (``"31-40,90-95"``): the constructor argument that recreates this callback."""
        return ",".join(str(r) for r in self.ranges)

    @property
    def skipped_batches(self) -> int:
        """Micro-batches dropped so far."""
        return self.sampler.skipped if self.sampler is not None else 0

    # ------------------------------------------------------------------ Trainer's callback-state mechanism
    def state(self) -> dict[str, Any]:
        """Saved by Trainer in each checkpoint's ``trainer_state.json`` (``stateful_callbacks``)."""
        return {"args": {"steps": self.spec}, "attributes": {}}

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       train_dataloader: Any = None, **kwargs: Any) -> None:
        if isinstance(state.stateful_callbacks, dict):
            # a checkpoint saved without this callback has no entry, and Trainer's save step indexes it
            state.stateful_callbacks.setdefault(type(self).__name__, self.state())
        loader = base_loader(train_dataloader)
        inner = getattr(loader, "batch_sampler", None)
        try:
            sized = inner is not None and len(inner) >= 0
        except TypeError:  # an IterableDataset's loader: a batch sampler over an endless, unsized sampler
            sized = False
        if loader is None or not sized:
            raise ValueError("SkipBatches needs a map-style train dataset (a dataloader with a batch sampler); "
                             f"this train dataloader ({type(loader).__name__}) has none, so there are no batch "
                             "positions to skip. Filter the bad samples out of the dataset instead.")
        if isinstance(inner, SkippingBatchSampler):  # train() called again with the same callback
            inner = inner.inner
        accumulation = max(int(args.gradient_accumulation_steps or 1), 1)
        sampler = SkippingBatchSampler(inner, self.ranges, accumulation)
        try:
            # DataLoader refuses to set batch_sampler after construction; the wrapper keeps its length and
            # delegates every other attribute, so nothing that reads it afterwards sees a difference.
            object.__setattr__(loader, "batch_sampler", sampler)
        except (AttributeError, TypeError) as exc:
            raise ValueError(f"SkipBatches cannot wrap this train dataloader ({type(loader).__name__}): {exc}") from None
        self.sampler = sampler
        per_epoch = max(-(-len(inner) // accumulation), 1)  # Trainer's num_update_steps_per_epoch
        self._next_epoch = state.global_step // per_epoch  # Trainer's epochs_trained
        first = self.ranges[0].first
        if state.global_step >= first:
            log.warning("SkipBatches: training starts at step %d, at or after the skip range's start (%d). If the "
                        "checkpoint comes from the run that trained on those batches, its weights already carry "
                        "them: resume from a checkpoint before step %d.", state.global_step, first, first)
        if state.global_step > 0 and any(self._next_epoch > (r.last - 1) // per_epoch for r in self.ranges):
            log.warning("SkipBatches: resuming in a later epoch than a skipped range; Trainer computes the "
                        "checkpoint's data position assuming full epochs, so it is off by the skipped count.")
        log.info("SkipBatches: skipping steps %s (%d micro-batches per step); the logged step keeps counting",
                 self.spec, accumulation)

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if self.sampler is not None:
            self.sampler.epoch = self._next_epoch
        self._next_epoch += 1

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if self.sampler is not None:
            log.info("SkipBatches: %d micro-batches skipped (steps %s)", self.sampler.skipped, self.spec)
