"""The real training loss, seen where Trainer's ``logging_nan_inf_filter`` cannot hide it.

Trainer's default ``logging_nan_inf_filter=True`` replaces a NaN/Inf step loss by the mean of the
interval's finite ones before logging it, so the loss chart would show a normal (or 0.0) value at the
very step training broke. :class:`LossWatch` hooks the model's forward pass and keeps a detached copy
of ``outputs.loss`` (one small op queued on its device, no host sync; a copy, not a reference, because a
compiled model's CUDA graphs reuse their output memory at the next forward). The kept losses are
checked once per *logged* step, when Trainer synchronises anyway: one ``isfinite`` over all of them on
their device, and one small read of the flag and of the first bad step. A training that logs rarely has
them folded into that flag every ``FOLD_EVERY`` forwards, still on the device.

Earlier versions ran four to six tensor ops per forward, among them ``torch.tensor(step, device=...)``:
~60 µs of the training thread per forward on the CPU, and on a GPU a blocking host-to-device copy (torch
synchronises the stream after a copy that is not ``non_blocking``) at every forward.

Used by the anomaly feature (collectors/anomaly/plugin.py); imports torch only when attached.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FOLD_EVERY = 256
"""Forwards whose losses are kept before they are folded into a flag on the device (bounds what a training
that logs every few thousand forwards holds: one scalar tensor each)."""


@dataclass(frozen=True)
class LossCheck:
    """What the watch saw since the last read: whether any training loss was NaN/Inf, the first
    step it happened at, and how many forward passes were checked."""

    non_finite: bool
    first_step: int | None
    checked: int


NOTHING = LossCheck(False, None, 0)


class LossWatch:
    """Flags non-finite training losses from a model's outputs without a per-step host sync.

    Args:
        model: a ``torch.nn.Module`` whose forward returns an object with ``.loss`` (a Transformers
            ``ModelOutput`` when labels are given) or a dict with ``"loss"``. Outputs without a loss
            tensor are ignored (nothing to check; the grad-norm and logged-loss rules still apply).

    Example:
        >>> watch = LossWatch(model)          # doctest: +SKIP
        >>> watch.set_step(31); model(**batch)  # doctest: +SKIP
        >>> watch.collect().non_finite          # doctest: +SKIP
        True
    """

    def __init__(self, model: Any) -> None:
        import torch

        self._torch = torch
        self._step = 0
        self._losses: list[Any] = []
        self._steps: list[int] = []
        self._folds: list[tuple[list[int], Any, Any]] = []
        """Folded losses: their steps, and on their device which were non-finite and whether any was."""
        self._checked = 0
        self.unchecked = 0
        """Losses that could not be checked (a fold failed); the logged loss and grad-norm rules still apply."""
        self._handle = model.register_forward_hook(self._hook)

    def set_step(self, step: int) -> None:
        """The optimizer step the next forward passes belong to (Trainer's ``global_step + 1``)."""
        self._step = int(step)

    def _hook(self, module: Any, inputs: Any, output: Any) -> None:
        if not getattr(module, "training", False):
            return  # evaluation losses are logged unfiltered (eval_loss): nothing hides them
        loss = _loss_of(output)
        torch = self._torch
        if loss is None or not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            return
        self._losses.append(loss.detach().clone())
        self._steps.append(self._step)
        self._checked += 1
        if len(self._losses) >= FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        """The kept losses into their non-finite flags and one "any", on their device (no sync)."""
        losses, steps = self._losses, self._steps
        if not losses:
            return
        self._losses, self._steps = [], []
        torch = self._torch
        with torch.no_grad():
            try:
                try:
                    stacked = torch.stack([t.reshape(()) for t in losses])
                except RuntimeError:  # dtypes or devices differ between forwards (rare): one of each, as fp32
                    device = losses[-1].device
                    stacked = torch.stack([t.reshape(()).to(device=device, dtype=torch.float32) for t in losses])
                bad = ~torch.isfinite(stacked)
                self._folds.append((steps, bad, bad.any()))
            except Exception:  # noqa: BLE001 - a forward hook must never break the training's forward
                self.unchecked += len(losses)

    def collect(self) -> LossCheck:
        """Check the losses kept since the last read, and reset (one small device-to-host read per fold,
        one fold per ``FOLD_EVERY`` forwards); call it at logged steps only."""
        self._fold()
        folds, checked = self._folds, self._checked
        self._folds, self._checked = [], 0
        if not folds:
            return LossCheck(False, None, checked) if checked else NOTHING
        for steps, bad, any_bad in folds:
            if bool(any_bad.item()):  # argmax: the first maximum, i.e. the first non-finite loss
                return LossCheck(True, steps[int(bad.to(self._torch.uint8).argmax().item())], checked)
        return LossCheck(False, None, checked)

    def close(self) -> None:
        """Remove the forward hook (the model is left as it was)."""
        self._handle.remove()


def _loss_of(output: Any) -> Any:
    """The loss tensor of a forward's output, if it carries one."""
    loss = getattr(output, "loss", None)
    if loss is not None:
        return loss
    if isinstance(output, dict):
        return output.get("loss")
    return None
