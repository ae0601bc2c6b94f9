"""The real training loss, seen where Trainer's ``logging_nan_inf_filter`` cannot hide it.

Trainer's default ``logging_nan_inf_filter=True`` replaces a NaN/Inf step loss by the mean of the
interval's finite ones before logging it, so the loss chart would show a normal (or 0.0) value at the
very step training broke. :class:`LossWatch` hooks the model's forward pass and folds
``isfinite(outputs.loss)`` into one flag that stays on the device: no host sync per step. The flag,
and the first step it went bad at, are read once per *logged* step, when Trainer synchronises anyway.

Used by the anomaly feature (collectors/anomaly/plugin.py); imports torch only when attached.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
        self._bad: Any = None
        self._first: Any = None
        self._checked = 0
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
        with torch.no_grad():
            bad = ~torch.isfinite(loss.detach().reshape(()))
            if self._bad is None:
                self._bad = bad.clone()
                self._first = torch.where(bad, torch.tensor(self._step, device=bad.device),
                                          torch.tensor(-1, device=bad.device))
            else:
                fresh = bad & ~self._bad
                self._first = torch.where(fresh, torch.tensor(self._step, device=bad.device), self._first)
                self._bad |= bad
        self._checked += 1

    def collect(self) -> LossCheck:
        """Read and reset the flag (one small device-to-host copy); call it at logged steps only."""
        if self._bad is None:
            return LossCheck(False, None, self._checked) if self._checked else NOTHING
        bad = bool(self._bad.item())
        first = int(self._first.item()) if bad else None
        out = LossCheck(bad, first if first is not None and first >= 0 else None, self._checked)
        self._bad = self._first = None
        self._checked = 0
        return out

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
