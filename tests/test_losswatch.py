"""LossWatch: non-finite training losses seen from the model's outputs, read once per logged step."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from collectors.anomaly.losswatch import LossWatch  # noqa: E402


def _model():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=40, n_positions=16))


def _step(model, watch: LossWatch, step: int) -> None:
    watch.set_step(step)
    ids = torch.randint(0, 40, (2, 8))
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()


def test_finite_losses_give_nothing_and_count_forwards() -> None:
    model = _model().train()
    watch = LossWatch(model)
    for s in range(1, 4):
        _step(model, watch, s)
    check = watch.collect()
    assert not check.non_finite and check.first_step is None and check.checked == 3
    assert watch.collect().checked == 0  # reset by the read


def test_nan_weights_flag_the_first_bad_step_only() -> None:
    model = _model().train()
    watch = LossWatch(model)
    _step(model, watch, 1)
    _step(model, watch, 2)
    with torch.no_grad():
        model.transformer.wte.weight.fill_(float("nan"))
    for s in (3, 4, 5):
        _step(model, watch, s)
    check = watch.collect()
    assert check.non_finite and check.first_step == 3 and check.checked == 5
    _step(model, watch, 6)
    again = watch.collect()
    assert again.non_finite and again.first_step == 6  # the next interval reports its own first step


def test_eval_mode_and_outputs_without_loss_are_ignored() -> None:
    model = _model()
    watch = LossWatch(model)
    with torch.no_grad():
        model.transformer.wte.weight.fill_(float("nan"))
    model.eval()
    ids = torch.randint(0, 40, (1, 4))
    model(input_ids=ids, labels=ids)  # eval: its loss is logged unfiltered as eval_loss
    model.train()
    model(input_ids=ids)  # no labels: no loss to check
    assert watch.collect().checked == 0
    watch.close()
    model(input_ids=ids, labels=ids)
    assert watch.collect().checked == 0  # hook removed


class _Out:
    def __init__(self, loss) -> None:  # type: ignore[no-untyped-def]
        self.loss = loss


def _watch():  # type: ignore[no-untyped-def]
    module = torch.nn.Linear(2, 2).train()
    return module, LossWatch(module)


def test_a_forward_queues_one_copy_of_its_loss_no_check_and_no_host_to_device_copy() -> None:
    """Per forward only a copy of the loss is queued (``clone``): no ``isfinite``/``where`` and no tensor made
    from a Python number, which on a GPU is a blocking host-to-device copy waiting for the stream."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            self.names.append(func.__name__)
            return func(*args, **(kwargs or {}))

    module, watch = _watch()
    loss = torch.tensor(1.5) * 1.0
    for step in range(1, 4):
        watch.set_step(step)
        with Ops() as ops:
            watch._hook(module, (), _Out(loss))
        assert [n.split(".")[0] for n in ops.names if not n.startswith("detach")] == ["clone"], ops.names
    assert watch.collect().checked == 3


def test_a_loss_whose_memory_is_reused_after_its_forward_is_still_seen() -> None:
    """A compiled model's CUDA graphs write the next forward's loss into the same memory: the watch keeps a
    copy, so a NaN overwritten by a finite value is still reported at its own step."""
    module, watch = _watch()
    out = torch.full((), float("nan"))
    watch.set_step(3)
    watch._hook(module, (), _Out(out))
    out.fill_(0.25)  # the next forward's loss, in the same memory
    watch.set_step(4)
    watch._hook(module, (), _Out(out))
    check = watch.collect()
    assert check.non_finite and check.first_step == 3 and check.checked == 2


def test_losses_kept_over_many_forwards_are_folded_and_the_first_bad_step_survives() -> None:
    from collectors.anomaly.losswatch import FOLD_EVERY

    module, watch = _watch()
    bad_at = (FOLD_EVERY + 7, 2 * FOLD_EVERY + 1)
    for step in range(1, 3 * FOLD_EVERY + 5):
        watch.set_step(step)
        value = float("inf") if step in bad_at else 1.0 / step
        watch._hook(module, (), _Out(torch.tensor(value, dtype=torch.bfloat16 if step % 2 else torch.float32)))
        assert len(watch._losses) < FOLD_EVERY  # folded on the device as they come: memory stays bounded
    check = watch.collect()
    assert check.non_finite and check.first_step == bad_at[0] and check.checked == 3 * FOLD_EVERY + 4
    assert watch.unchecked == 0
    watch.set_step(10_000)
    watch._hook(module, (), _Out(torch.tensor(2.0)))
    assert watch.collect() == type(check)(False, None, 1)
