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
