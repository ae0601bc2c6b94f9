"""Whether the optimizer still changes the weights, read at logged steps from a small sample of them.

A training whose updates are lost (``optimizer.step()`` skipped by a bug, a GradScaler that skips every
step, a frozen or detached model, bf16 weights whose updates round away) logs on as if nothing were wrong:
the loss merely stops improving, and within tens of noisy logs that is indistinguishable from a healthy
slow phase. The weights themselves say it at once. :class:`UpdateWatch` keeps a copy of a few strided
elements of up to :data:`MAX_PARAMS` trainable parameters (spread over the model) and, at each logged
step, reports the fraction of them that changed since the previous logged step: 0.0 means none of the
sampled weights moved. The rule ``optimizer_stalled`` (:mod:`collectors.anomaly.rules`) judges it.

Cost: one gather of the sample (about a thousand numbers) on the training thread per checked logged
step (:meth:`UpdateWatch.sample`). On the CPU it is one ``np.concatenate`` of numpy views into the
weights (~8 µs, against ~35 µs for ``torch.cat``). On a device it is copied to the host there: a logged
step has just synchronised with the device (the loop's ``loss.item()``, Trainer's logging), so the copy
waits only for the gather. The compare is numpy on that host copy (:meth:`UpdateWatch.compare`, a few
µs on any thread). The rules run it on the training thread before its optimizer step, where a
device-to-host copy would wait for the whole step's queued work. The anomaly feature checks at most
every ``CHECK_EVERY_STEPS`` training steps; nothing runs per unlogged training step.

Used by the anomaly feature (collectors/anomaly/plugin.py); imports torch only when attached.
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np

MAX_PARAMS = 16
"""Parameters sampled, spread evenly over the model's trainable ones (first, last and between)."""
PER_PARAM = 64
"""Elements sampled per parameter, evenly strided across it (one row of an embedding may never move)."""
CHECK_EVERY_STEPS = 3
"""The anomaly feature samples at logged steps at least this many training steps apart: a loop logging
every step pays a third of the gathers, and ``optimizer_stalled`` fires no later (it needs its stall to
span ``convergence.stall_min_steps``, 10 by default, either way). Trainer's 5-step logging checks every log."""


_GENERATIONS = itertools.count(1)


class UpdateWatch:
    """Fraction of a sample of trainable weights changed between two logged steps.

    Args:
        model: a ``torch.nn.Module``. Its parameters with ``requires_grad`` and elements are sampled.

    Example:
        >>> watch = UpdateWatch(model)   # doctest: +SKIP
        >>> watch.collect()               # the first call only takes the sample
        >>> opt.step(); watch.collect()   # doctest: +SKIP
        1.0
    """

    def __init__(self, model: Any) -> None:
        import torch

        self._torch = torch
        params = [p for p in model.parameters() if p.requires_grad and p.numel() > 0]
        if len(params) > MAX_PARAMS:
            last = len(params) - 1
            params = [params[round(i * last / (MAX_PARAMS - 1))] for i in range(MAX_PARAMS)]
        self._params = params
        self._views: list[Any] = []
        self._host_views: list[Any] | None = None
        self._ptrs: list[int] = []
        self._mixed = False
        self._generation = 0
        self._prev: tuple[int, Any] | None = None

    @property
    def sampled(self) -> int:
        """Parameters in the sample (0: nothing trainable, the watch reports nothing)."""
        return len(self._params)

    def _build(self) -> None:
        """Strided views into the sampled parameters, made once: an optimizer updates weights in place,
        so each logged step costs one gather of the views, not a slice per parameter."""
        self._views, self._ptrs = [], []
        for p in self._params:
            flat = p.detach().reshape(-1)
            stride = max(1, flat.numel() // PER_PARAM)
            self._views.append(flat[::stride][:PER_PARAM])
            self._ptrs.append(p.data_ptr())
        views = self._views
        self._mixed = len({v.dtype for v in views}) > 1 or len({v.device for v in views}) > 1
        self._host_views = None
        if not self._mixed and views[0].device.type == "cpu":
            try:  # numpy views of the same memory: a gather is then one np.concatenate, no torch dispatch
                self._host_views = [v.numpy() for v in views]
            except (TypeError, RuntimeError):  # bf16 / fp8 (no numpy dtype), or a tensor numpy cannot view
                self._host_views = None

    def _moved(self) -> bool:
        """Whether a parameter's storage was replaced (``model.to(device)``, a sharding wrapper): the views
        would then watch stale memory that never changes, which must never read as a stall."""
        return [p.data_ptr() for p in self._params] != self._ptrs

    def sample(self) -> tuple[int, Any] | None:
        """Training thread, at a logged step: a host copy of the sampled weights as they are now (one
        gather and one small device-to-host copy), to hand to :meth:`compare` on any thread (a numpy
        array). ``None`` when nothing is trainable. A replaced storage starts a new generation (the next
        compare says None)."""
        if not self._params:
            return None
        torch = self._torch
        with torch.no_grad():
            if not self._views or self._moved():
                self._build()
                self._generation = next(_GENERATIONS)  # unique across watches: a sample never meets another's
            if self._host_views is not None:
                return self._generation, np.concatenate(self._host_views)
            views = self._views
            if self._mixed:
                views = [v.float().cpu() for v in views]  # mixed precisions or devices: compare as fp32 on CPU
            cur = torch.cat(views)
            if cur.device.type != "cpu":
                cur = cur.cpu()  # ~1,000 numbers, right after the logged step's own sync (see the module doc)
            try:
                host = cur.numpy()
            except TypeError:  # bf16 / fp8: numpy has no such dtype; fp32 holds each of them exactly
                host = cur.float().numpy()
            return self._generation, host

    def compare(self, sample: tuple[int, Any] | None) -> float | None:
        """The fraction of sampled weights that changed between the previous sample compared and this one
        (samples must come in the order they were taken). None for the first one, after a replaced
        storage, or for ``None``. Host arrays: numpy, no torch op, no device, any thread."""
        if sample is None:
            return None
        generation, cur = sample
        prev, self._prev = self._prev, sample
        if prev is None or prev[0] != generation:
            return None
        # NaN != NaN counts as changed: a NaN weight is the non-finite rules' business, not a stall
        return int(np.count_nonzero(cur != prev[1])) / cur.size

    def collect(self) -> float | None:
        """The fraction of sampled weights that changed since the previous call (None on the first call,
        when nothing is trainable, or after the parameters' storage was replaced): :meth:`sample` and
        :meth:`compare` at once."""
        return self.compare(self.sample())
