"""Golden vs predicted: a live validation sample with a token-by-token comparison, taken during training.

:class:`SamplesPlugin` is a :class:`collectors.plugin.MonitorPlugin`. Every ``update_frequency`` optimizer
steps it takes the next sample of a fixed, seeded set, asks the model for its answer and writes

* ``status/training_detail.json`` (atomically): the latest sample, read by the dashboard's Samples page;
* one ``kind: "sample"`` line in ``logs/samples.jsonl``: the history the page's step slider browses.

Record fields (docs/samples.md): ``status, step, epoch, train_loss, eval_loss, learning_rate, sample_idx,
prompt.messages, golden, predicted, comparison, gpu_memory, timestamp`` plus ``mode``,
``sample_ms`` (wall clock) / ``sample_cpu_ms`` (process CPU time), ``memory``, ``notes`` and
``prompt.text/template/tokens``.

Prediction modes: ``"teacher_forced"`` (default: one forward pass over prompt + golden answer, argmax at
each golden position) and ``"generate"`` (greedy, ``max_new_tokens``, stops at EOS). The sample runs in
eval mode under ``torch.no_grad()``, restores the model's previous train/eval mode, and saves and
restores the torch (and CUDA) RNG state, so the training's random stream is exactly the same with or
without samples.

Where samples come from (``SamplesConfig.dataset``): an explicit list of chat samples (lists of
``{"role", "content"}``) or plain texts; any dataset (``len`` + indexing) whose items are chats,
``{"messages": [...]}``, ``{"text": ...}``, strings, or tokenised ``{"input_ids", "labels"}`` items;
a dataset with a ``.samples`` list of chats (the demo's ``ChatDataset``) uses that list. ``None``
(default) means the Trainer's eval dataset (learned from Trainer's eval dataloader at the first
evaluation; with ``eval_strategy="no"`` the training set is used, with a warning).

Documented fallbacks for awkward input (each reported once with the sample's index; training goes on):

* a chat without an assistant turn has no golden answer: the sample is skipped, the rotation moves on;
* a tokenizer without a chat template: the prompt is rendered as ``"<role>: <content>\\n"`` lines
  followed by ``"assistant: "`` (:data:`FALLBACK_GENERATION_PROMPT`), and ``prompt.template`` says
  ``"fallback"``;
* plain texts: the first half of the tokens is the prompt, the rest the golden answer
  (:data:`PLAIN_TEXT_PROMPT_FRACTION`); the prompt shows as one message with role ``"text"``;
* bytes that are not UTF-8 (and lone surrogates) are decoded with U+FFFD replacement, noted in ``notes``;
* empty texts: an empty golden answer is compared as it is (``Accuracy: n/a``), an empty plain text is
  skipped;
* prompts longer than the model's context (``n_positions`` / ``max_position_embeddings``) or than
  ``max_input_tokens``: the model input keeps the golden answer and the end of the prompt, noted in ``notes``; the record always stores
  the full prompt messages (the dashboard truncates only what it displays).

Example:
    >>> monitor = Monitor("runs/exp1", plugins=[SamplesPlugin(SamplesConfig(dataset=eval_chats))])  # doctest: +SKIP
    >>> monitor.watch(model=model, tokenizer=tokenizer)                                            # doctest: +SKIP
    >>> trainer.add_callback(MonitorCallback(samples=SamplesConfig(dataset=trainer.eval_dataset)))  # doctest: +SKIP
"""
from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from collectors import runformat as rf
from collectors.plugin import PluginHost
from collectors.runtime import process_memory
from collectors.samples.alignment import METHOD_ALIGNMENT, METHOD_POSITIONAL, compare

DEFAULT_UPDATE_FREQUENCY = 50
DEFAULT_NUM_SAMPLES = 8
DEFAULT_MAX_NEW_TOKENS = 64
DEFAULT_SEED = 0
DEFAULT_MAX_INPUT_TOKENS = 2048
MODE_TEACHER_FORCED = "teacher_forced"
MODE_GENERATE = "generate"
MODES = (MODE_TEACHER_FORCED, MODE_GENERATE)
COMPARE_AUTO = "auto"
COMPARE_METHODS = (COMPARE_AUTO, METHOD_ALIGNMENT, METHOD_POSITIONAL)
PLAIN_TEXT_PROMPT_FRACTION = 0.5
TEXT_ROLE = "text"
FALLBACK_GENERATION_PROMPT = "assistant: "
TEMPLATE_CHAT = "chat_template"
TEMPLATE_FALLBACK = "fallback"
TEMPLATE_NONE = "none"
HUGE_MAX_LENGTH = 1_000_000
"""``tokenizer.model_max_length`` above this is transformers' "no limit" sentinel."""
IGNORE_INDEX = -100
MESSAGE_KEYS = ("messages", "conversations", "conversation", "chat")
TEXT_KEYS = ("text", "content")


class SampleError(ValueError):
    """A validation sample that cannot be used, with the reason in words."""


@dataclass
class SamplesConfig:
    """Settings of the live golden-vs-predicted samples.

    Args:
        update_frequency: take a sample every this many optimizer steps (default 50).
        mode: ``"teacher_forced"`` (default, one forward pass) or ``"generate"`` (greedy decoding).
        max_new_tokens: most tokens generated in ``"generate"`` mode (default 64).
        dataset: where samples come from: a list of chats or plain texts, or a dataset; default ``None``
            means the Trainer's eval dataset (see the module docstring).
        num_samples: size of the fixed set the samples rotate through (default 8).
        seed: picks the fixed set; the same seed gives the same set (default 0).
        compare: ``"auto"`` (default: positional for teacher-forced, alignment for generation),
            ``"alignment"`` or ``"positional"`` (see :mod:`collectors.samples.alignment`).
        sample_at_end: also take a sample when the training finishes, unless that step was sampled
            (default True).
        max_input_tokens: most tokens fed to the model per sample (default 2048), so one sample stays
            cheap; longer inputs keep the golden answer and the end of the prompt (noted in ``notes``).

    Raises:
        ValueError: for a setting outside its allowed values (the message lists them).
    """

    update_frequency: int = DEFAULT_UPDATE_FREQUENCY
    mode: str = MODE_TEACHER_FORCED
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    dataset: Any = None
    num_samples: int = DEFAULT_NUM_SAMPLES
    seed: int = DEFAULT_SEED
    compare: str = COMPARE_AUTO
    sample_at_end: bool = True
    max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS

    def __post_init__(self) -> None:
        for name in ("update_frequency", "max_new_tokens", "num_samples", "max_input_tokens"):
            val = getattr(self, name)
            if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                raise ValueError(f"SamplesConfig({name}=...) must be a positive integer; got {val!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"SamplesConfig(seed=...) must be an integer; got {self.seed!r}")
        if self.mode not in MODES:
            raise ValueError(f"SamplesConfig(mode=...) must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.compare not in COMPARE_METHODS:
            raise ValueError(f"SamplesConfig(compare=...) must be one of {', '.join(COMPARE_METHODS)}; "
                             f"got {self.compare!r}")
        if isinstance(self.dataset, (str, bytes)):
            raise ValueError("SamplesConfig(dataset=...) must be a list of samples or a dataset, not a single "
                             "string; wrap one text in a list")

    @property
    def compare_method(self) -> str:
        if self.compare != COMPARE_AUTO:
            return self.compare
        return METHOD_POSITIONAL if self.mode == MODE_TEACHER_FORCED else METHOD_ALIGNMENT


def as_config(value: Any) -> SamplesConfig | None:
    """What ``MonitorCallback(samples=...)`` accepts: ``None``/``False`` (off), ``True`` (defaults), a
    :class:`SamplesConfig`, or a list/dataset of samples (defaults with that dataset).

    Raises:
        ValueError: for anything else.
    """
    if value is None or value is False:
        return None
    if value is True:
        return SamplesConfig()
    if isinstance(value, SamplesConfig):
        return value
    if isinstance(value, (str, bytes, int, float)):
        raise ValueError("samples=... must be True, a SamplesConfig, or a list/dataset of samples; "
                         f"got {type(value).__name__} {value!r:.60}")
    if hasattr(value, "__len__") and hasattr(value, "__getitem__"):
        return SamplesConfig(dataset=value)
    raise ValueError("samples=... must be True, a SamplesConfig, or a list/dataset of samples; "
                     f"got {type(value).__name__}")


# --------------------------------------------------------------------------- pure preparation

def is_due(step: int, last_sampled: int, frequency: int) -> bool:
    """True when ``step`` crossed a multiple of ``frequency`` since ``last_sampled`` (pure).

    Crossing, not equality, so a plain loop that logs every 7 steps still samples near every 50th.
    """
    return step > 0 and step // frequency > last_sampled // frequency


def choose_indices(n: int, k: int, seed: int) -> list[int]:
    """The fixed rotation: ``min(k, n)`` distinct indices of ``range(n)``, reproducible from ``seed``."""
    return random.Random(seed).sample(range(n), min(k, n)) if n > 0 else []


def clean_text(value: Any, what: str) -> tuple[str, str | None]:
    """Text as a clean UTF-8-encodable string, plus a note when something had to be replaced.

    Raises:
        SampleError: when ``value`` is not text at all.
    """
    if value is None:
        return "", None
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8"), None
        except UnicodeDecodeError:
            return bytes(value).decode("utf-8", errors="replace"), f"{what} is not valid UTF-8; bad bytes shown as U+FFFD"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value, None
        except UnicodeEncodeError:
            fixed = value.encode("utf-8", errors="replace").decode("utf-8")
            return fixed, f"{what} has characters that are not valid UTF-8 (lone surrogates); replaced"
    raise SampleError(f"{what} must be text; got {type(value).__name__}")


@dataclass
class RawSample:
    """One sample before tokenisation: ``kind`` is ``"chat"``, ``"text"`` or ``"tokens"``."""

    kind: str
    messages: list[dict[str, str]] = field(default_factory=list)
    text: str = ""
    input_ids: list[int] = field(default_factory=list)
    labels: list[int] | None = None
    notes: list[str] = field(default_factory=list)


def _is_chat(value: Any) -> bool:
    return (isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) > 0
            and all(isinstance(m, Mapping) and "role" in m for m in value))


def _as_int_list(value: Any) -> list[int]:
    tolist = getattr(value, "tolist", None)
    out = tolist() if callable(tolist) else list(value)
    if out and isinstance(out[0], list):  # a batch of one
        out = out[0]
    return [int(x) for x in out]


def normalise_item(item: Any) -> RawSample:
    """Classify one dataset item (pure).

    Raises:
        SampleError: for an item of an unsupported shape (the message names the shape).
    """
    if isinstance(item, (str, bytes, bytearray)):
        text, note = clean_text(item, "the text")
        return RawSample("text", text=text, notes=[note] if note else [])
    if _is_chat(item):
        notes: list[str] = []
        msgs = []
        for i, m in enumerate(item):
            role, n1 = clean_text(m.get("role"), f"message {i} role")
            content, n2 = clean_text(m.get("content"), f"message {i} ({role}) content")
            notes += [n for n in (n1, n2) if n]
            msgs.append({"role": role, "content": content})
        return RawSample("chat", messages=msgs, notes=notes)
    if isinstance(item, Mapping):
        for key in MESSAGE_KEYS:
            if _is_chat(item.get(key)):
                return normalise_item(item[key])
        for key in TEXT_KEYS:
            if isinstance(item.get(key), (str, bytes, bytearray)):
                return normalise_item(item[key])
        if item.get("input_ids") is not None:
            labels = item.get("labels")
            return RawSample("tokens", input_ids=_as_int_list(item["input_ids"]),
                             labels=None if labels is None else _as_int_list(labels),
                             notes=["tokenised sample: prompt and golden decoded from input_ids/labels"])
        raise SampleError(f"unsupported sample: a mapping with keys {sorted(map(str, item))[:8]}; expected "
                          "'messages' (chat), 'text', or 'input_ids' (+ 'labels')")
    if isinstance(item, Sequence) and len(item) == 0:
        raise SampleError("empty sample (an empty list)")
    raise SampleError(f"unsupported sample of type {type(item).__name__}; expected a chat (list of "
                      "{'role', 'content'}), a text, or a mapping with 'messages'/'text'/'input_ids'")


def split_chat(messages: Sequence[Mapping[str, str]]) -> tuple[list[dict[str, str]], str]:
    """Prompt messages (everything before the last assistant turn) and the golden answer (pure).

    Raises:
        SampleError: when there is no assistant turn.
    """
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
    if last < 0:
        roles = ", ".join(str(m.get("role")) for m in messages) or "none"
        raise SampleError(f"chat sample has no assistant turn (roles: {roles}), so there is no golden answer")
    return [dict(m) for m in messages[:last]], str(messages[last].get("content") or "")


def fallback_render(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
    """The documented prompt format for tokenizers without a chat template (pure)."""
    text = "".join(f"{m.get('role')}: {m.get('content')}\n" for m in messages)
    return text + FALLBACK_GENERATION_PROMPT if add_generation_prompt else text


def fit_context(prompt_ids: list[int], golden_ids: list[int], window: int | None) -> tuple[list[int], list[int], list[str]]:
    """Cut the model input to ``window`` tokens: keep the golden answer, drop the prompt's start (pure).

    The prompt keeps at least one token so the first golden token has something to be predicted from;
    when the golden answer alone does not fit, its end is not compared (noted).
    """
    notes: list[str] = []
    if not prompt_ids and golden_ids:
        prompt_ids, golden_ids = golden_ids[:1], golden_ids[1:]
        notes.append("empty prompt: the first golden token serves as the prompt")
    if window is None or len(prompt_ids) + len(golden_ids) <= window:
        return prompt_ids, golden_ids, notes
    if len(golden_ids) > window - 1:
        notes.append(f"golden answer has {len(golden_ids)} tokens; only the first {window - 1} fit the model's "
                     f"context of {window} and are compared")
        golden_ids = golden_ids[: window - 1]
    keep = window - len(golden_ids)
    if keep < len(prompt_ids):
        notes.append(f"prompt has {len(prompt_ids)} tokens; the model saw its last {keep} (context {window})")
        prompt_ids = prompt_ids[-keep:]
    return prompt_ids, golden_ids, notes


@dataclass
class PreparedSample:
    """A sample ready for the model: display data plus token ids."""

    index: int
    messages: list[dict[str, str]]
    golden: str
    prompt_text: str
    template: str
    prompt_ids: list[int]
    golden_ids: list[int]
    prompt_token_count: int
    notes: list[str]


def _tokenize(tokenizer: Any, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prepare(index: int, raw: RawSample, tokenizer: Any, window: int | None) -> PreparedSample:
    """Tokenise one sample for the model (needs the tokenizer; no model, no torch).

    Raises:
        SampleError: when the sample cannot be used (no assistant turn, empty text, ...).
    """
    notes = list(raw.notes)
    if raw.kind == "chat":
        prompt_msgs, golden = split_chat(raw.messages)
        full_msgs = prompt_msgs + [{"role": "assistant", "content": golden}]
        if _has_template(tokenizer):
            template = TEMPLATE_CHAT
            prompt_text = tokenizer.apply_chat_template(prompt_msgs, tokenize=False, add_generation_prompt=True)
            full_text = tokenizer.apply_chat_template(full_msgs, tokenize=False)
        else:
            template = TEMPLATE_FALLBACK
            notes.append(f"tokenizer has no chat template; prompt rendered as 'role: content' lines + "
                         f"{FALLBACK_GENERATION_PROMPT!r}")
            prompt_text = fallback_render(prompt_msgs, True)
            full_text = prompt_text + golden
        special = template != TEMPLATE_CHAT
        prompt_ids = _tokenize(tokenizer, prompt_text, special)
        full_ids = _tokenize(tokenizer, full_text, special)
        if full_text.startswith(prompt_text) and full_ids[: len(prompt_ids)] == prompt_ids:
            golden_ids = full_ids[len(prompt_ids):]  # what training labels: answer + end-of-turn tokens
        else:
            notes.append("prompt and full chat tokenise differently at the boundary; golden tokenised alone")
            golden_ids = _tokenize(tokenizer, golden, False)
        messages = prompt_msgs
    elif raw.kind == "text":
        if not raw.text.strip():
            raise SampleError("plain-text sample is empty")
        template = TEMPLATE_NONE
        ids = _tokenize(tokenizer, raw.text, True)
        if len(ids) < 2:
            raise SampleError(f"plain-text sample has {len(ids)} token(s); need 2 to split prompt and golden")
        cut = max(1, int(len(ids) * PLAIN_TEXT_PROMPT_FRACTION))
        prompt_ids, golden_ids = ids[:cut], ids[cut:]
        notes.append(f"plain text: first {cut} of {len(ids)} tokens are the prompt, the rest the golden answer")
        prompt_text = tokenizer.decode(prompt_ids)
        golden = tokenizer.decode(golden_ids)
        messages = [{"role": TEXT_ROLE, "content": prompt_text}]
    else:
        template = TEMPLATE_NONE
        ids, labels = raw.input_ids, raw.labels
        pad = getattr(tokenizer, "pad_token_id", None)
        if labels is not None and len(labels) == len(ids) and any(lab != IGNORE_INDEX for lab in labels):
            first = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
            last = max(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
            prompt_ids, golden_ids = ids[:first], ids[first:last + 1]
        else:
            while ids and pad is not None and ids[-1] == pad:
                ids = ids[:-1]
            if len(ids) < 2:
                raise SampleError("tokenised sample has fewer than 2 tokens")
            cut = max(1, int(len(ids) * PLAIN_TEXT_PROMPT_FRACTION))
            prompt_ids, golden_ids = ids[:cut], ids[cut:]
            notes.append("tokenised sample without labels: first half is the prompt")
        prompt_text = tokenizer.decode(prompt_ids)
        golden = tokenizer.decode(golden_ids)
        messages = [{"role": TEXT_ROLE, "content": prompt_text}]
    count = len(prompt_ids)
    prompt_ids, golden_ids, fit_notes = fit_context(prompt_ids, golden_ids, window)
    return PreparedSample(index, messages, golden, prompt_text, template, prompt_ids, golden_ids, count,
                          notes + fit_notes)


def context_window(model: Any, tokenizer: Any) -> int | None:
    """The model's maximum sequence length when it declares one (config or tokenizer)."""
    cfg = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        val = getattr(cfg, name, None)
        if isinstance(val, int) and val > 0:
            return val
    val = getattr(tokenizer, "model_max_length", None)
    return val if isinstance(val, int) and 0 < val < HUGE_MAX_LENGTH else None


def memory_label(memory: Mapping[str, float]) -> str:
    """``"19.43GB"`` (CUDA allocated) or ``"0.52GB (process RSS)"`` on CPU (pure)."""
    if "cuda_allocated_gb" in memory:
        return f"{memory['cuda_allocated_gb']:.2f}GB"
    if "rss_gb" in memory:
        return f"{memory['rss_gb']:.2f}GB (process RSS)"
    return "n/a"


# --------------------------------------------------------------------------- model calls (torch)

def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    out: set[int] = set()
    for val in (getattr(tokenizer, "eos_token_id", None),
                getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(val, int):
            out.add(val)
        elif isinstance(val, (list, tuple)):
            out.update(v for v in val if isinstance(v, int))
    return out


def predict_teacher_forced(model: Any, prompt_ids: list[int], golden_ids: list[int]) -> list[int]:
    """Argmax at each golden position from one forward pass over prompt + golden."""
    import torch

    if not golden_ids:
        return []
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids + golden_ids], dtype=torch.long, device=device)
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    logits = out.logits if hasattr(out, "logits") else out[0]
    start = len(prompt_ids) - 1
    return logits[0, start:start + len(golden_ids)].argmax(dim=-1).tolist()


def predict_generate(model: Any, tokenizer: Any, prompt_ids: list[int], max_new_tokens: int,
                     window: int | None) -> list[int]:
    """Greedy generation of at most ``max_new_tokens`` tokens, cut after the first EOS."""
    import torch

    room = max_new_tokens if window is None else min(max_new_tokens, window - len(prompt_ids))
    if room <= 0:
        return []
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    eos = _eos_ids(model, tokenizer)
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = min(eos) if eos else 0
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=room, do_sample=False,
                         eos_token_id=sorted(eos) or None, pad_token_id=pad)
    new = out[0, len(prompt_ids):].tolist()
    for i, tok in enumerate(new):
        if tok in eos:
            return new[: i + 1]
    return new


class _ModelContext:
    """Eval mode + no_grad + saved/restored RNG state around a sample; restores everything on exit."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __enter__(self) -> "_ModelContext":
        import torch

        self._torch = torch
        self._was_training = bool(getattr(self.model, "training", False))
        self._cpu_rng = torch.get_rng_state()
        self._cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        self._no_grad = torch.no_grad()
        self._no_grad.__enter__()
        self.model.eval()
        return self

    def __exit__(self, *exc: object) -> None:
        torch = self._torch
        try:
            self._no_grad.__exit__(*exc)
        finally:
            self.model.train(self._was_training)
            torch.set_rng_state(self._cpu_rng)
            if self._cuda_rng is not None:
                torch.cuda.set_rng_state_all(self._cuda_rng)


# --------------------------------------------------------------------------- the plugin

class SamplesPlugin:
    """Takes a golden-vs-predicted sample every ``update_frequency`` steps (see the module docstring).

    Args:
        config: a :class:`SamplesConfig`; default ``SamplesConfig()``.

    Attributes:
        taken: samples written so far; ``last_step``: step of the last sample; ``last_ms``: its cost.

    Example:
        >>> plugin = SamplesPlugin(SamplesConfig(update_frequency=25, dataset=eval_chats))  # doctest: +SKIP
        >>> with Monitor("runs/exp1", plugins=[plugin]) as mon:                            # doctest: +SKIP
        ...     mon.watch(model=model, tokenizer=tokenizer)
        ...     for step in range(1, 501):
        ...         mon.log(step, loss=train_step())
    """

    def __init__(self, config: SamplesConfig | None = None) -> None:
        if config is not None and not isinstance(config, SamplesConfig):
            raise ValueError(f"SamplesPlugin(config=...) must be a SamplesConfig; got {type(config).__name__}")
        self.config = config or SamplesConfig()
        self.taken = 0
        self.last_step = 0
        self.last_ms: float | None = None
        self.total_ms = 0.0
        self._rotation = 0
        self._dataset: Any = None
        self._indices: list[int] | None = None
        self._prepared: dict[int, PreparedSample | str] = {}
        self._writer: rf.JsonlWriter | None = None
        self._last_record: dict[str, Any] | None = None

    # ----------------------------------------------------------------- hooks
    def on_step_end(self, monitor: PluginHost, step: int) -> None:
        if is_due(step, self.last_step, self.config.update_frequency):
            self.take(monitor, step)

    def on_record(self, monitor: PluginHost, record: dict[str, Any]) -> None:
        # Plain loops call only ``monitor.log``; a train record at a due step triggers the sample there.
        step = record.get("step")
        if record.get("kind") == rf.RecordKind.TRAIN.value and isinstance(step, int) \
                and is_due(step, self.last_step, self.config.update_frequency):
            self.take(monitor, step)

    def on_close(self, monitor: PluginHost, state: rf.RunState) -> None:
        try:
            step = monitor.tracker.step
            if self.config.sample_at_end and state == rf.RunState.FINISHED and step > self.last_step:
                monitor.guard.run("SamplesPlugin final sample", self.take, monitor, step)
            elif self._last_record is not None and monitor.is_main:
                # The latest sample stays on screen; its status should say the run ended.
                final = dict(self._last_record, status=state.value)
                monitor.guard.run("writing training_detail.json", rf.write_json_atomic, monitor.paths.detail, final)
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def state_dict(self) -> dict[str, Any]:
        return {"taken": self.taken, "last_step": self.last_step, "rotation": self._rotation}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.taken = int(state.get("taken", 0))
        self.last_step = int(state.get("last_step", 0))
        self._rotation = int(state.get("rotation", 0))

    # ----------------------------------------------------------------- work
    def take(self, monitor: PluginHost, step: int) -> dict[str, Any] | None:
        """Take one sample now at ``step``: predict, compare, write. Returns the record (``None`` if skipped)."""
        if not monitor.is_main:
            return None
        self.last_step = step  # even when skipped below, so a broken setup is not retried every step
        t0, c0 = time.perf_counter(), time.process_time()
        model, tokenizer = monitor.model, monitor.tokenizer
        if model is None or tokenizer is None:
            missing = " and ".join(n for n, v in (("model", model), ("tokenizer", tokenizer)) if v is None)
            monitor.guard.warn_once("samples: no model/tokenizer",
                                    f"samples need the {missing}: call monitor.watch(model=..., tokenizer=...) "
                                    "(MonitorCallback passes Trainer's model and processing_class)")
            return None
        if not self._resolve_dataset(monitor):
            return None
        declared = context_window(model, tokenizer)
        window = min(declared, self.config.max_input_tokens) if declared else self.config.max_input_tokens
        sample = self._next_sample(monitor, tokenizer, window)
        if sample is None:
            return None
        with _ModelContext(model):
            if self.config.mode == MODE_TEACHER_FORCED:
                pred_ids = predict_teacher_forced(model, sample.prompt_ids, sample.golden_ids)
            else:
                pred_ids = predict_generate(model, tokenizer, sample.prompt_ids, self.config.max_new_tokens, window)
        record = self._record(monitor, step, sample, pred_ids, tokenizer)
        record["sample_ms"] = (time.perf_counter() - t0) * 1000.0
        record["sample_cpu_ms"] = (time.process_time() - c0) * 1000.0  # CPU time: robust on a busy machine
        self._write(monitor, record)
        self._last_record = record
        self.taken += 1
        self.last_ms = record["sample_ms"]
        self.total_ms += self.last_ms
        return record

    def _resolve_dataset(self, monitor: PluginHost) -> bool:
        if self._indices is not None:
            return bool(self._indices)
        ds = self.config.dataset
        if ds is None:
            kwargs = getattr(monitor, "trainer_kwargs", None) or {}
            loader = kwargs.get("eval_dataloader")
            ds = getattr(loader, "dataset", None)
            if ds is None:
                args = getattr(monitor, "trainer_args", None)
                strategy = str(getattr(getattr(args, "eval_strategy", None), "value", getattr(args, "eval_strategy", "")))
                train = getattr(kwargs.get("train_dataloader"), "dataset", None)
                if args is not None and strategy == "no" and train is not None:
                    monitor.guard.warn_once("samples: using the training set",
                                            "samples: the Trainer has no evaluation, so samples come from the "
                                            "training set (pass SamplesConfig(dataset=...) to choose)")
                    ds = train
                else:
                    monitor.guard.warn_once("samples: no dataset yet",
                                            "samples: no eval dataset known yet (it is learned at the first "
                                            "evaluation); pass SamplesConfig(dataset=trainer.eval_dataset) or "
                                            "a list of samples to sample from the start")
                    return False
        items = getattr(ds, "samples", None)
        if isinstance(items, Sequence) and not isinstance(items, (str, bytes)) and len(items) == len(ds):
            ds = items  # the demo's ChatDataset: prefer the chats over the tokenised tensors
        try:
            n = len(ds)
        except TypeError:
            monitor.guard.warn_once("samples: dataset has no length",
                                    f"samples: the dataset ({type(ds).__name__}) has no len(); pass a list of samples")
            self._indices = []
            return False
        self._dataset = ds
        self._indices = choose_indices(n, self.config.num_samples, self.config.seed)
        if not self._indices:
            monitor.guard.warn_once("samples: empty dataset", "samples: the sample dataset is empty; samples are off")
        return bool(self._indices)

    def _next_sample(self, monitor: PluginHost, tokenizer: Any, window: int | None) -> PreparedSample | None:
        assert self._indices is not None
        for _ in range(len(self._indices)):
            idx = self._indices[self._rotation % len(self._indices)]
            self._rotation += 1
            prep = self._prepared.get(idx)
            if prep is None:
                try:
                    prep = prepare(idx, normalise_item(self._dataset[idx]), tokenizer, window)
                except SampleError as exc:
                    prep = str(exc)
                    monitor.guard.warn_once(f"samples: sample {idx}", f"samples: sample {idx} skipped: {exc}")
                except Exception as exc:  # noqa: BLE001 - e.g. a chat template that rejects this chat's roles
                    prep = f"{type(exc).__name__}: {exc}"
                    monitor.guard.warn_once(f"samples: sample {idx}",
                                            f"samples: sample {idx} skipped: preparing it failed ({prep})")
                self._prepared[idx] = prep
            if isinstance(prep, PreparedSample):
                return prep
        monitor.guard.warn_once("samples: none usable", "samples: no sample of the set is usable (see the "
                                "warnings above); samples are off")
        return None

    def _record(self, monitor: PluginHost, step: int, sample: PreparedSample, pred_ids: list[int],
                tokenizer: Any) -> dict[str, Any]:
        golden_tokens = tokenizer.batch_decode([[i] for i in sample.golden_ids]) if sample.golden_ids else []
        pred_tokens = tokenizer.batch_decode([[i] for i in pred_ids]) if pred_ids else []
        comparison = compare(golden_tokens, pred_tokens, golden_keys=sample.golden_ids, predicted_keys=pred_ids,
                             method=self.config.compare_method)
        predicted = tokenizer.decode(pred_ids, skip_special_tokens=True) if pred_ids else ""
        predicted, note = clean_text(predicted, "the prediction")
        tracker = monitor.tracker
        state = getattr(monitor, "trainer_state", None)
        epoch = getattr(state, "epoch", None)
        memory = process_memory()
        now = time.time()
        return rf.make_record(
            rf.RecordKind.SAMPLE,
            status=tracker.state.value,
            step=step,
            epoch=epoch if epoch is not None else tracker.epoch,
            train_loss=tracker.train_loss,
            eval_loss=tracker.eval_loss,
            learning_rate=tracker.learning_rate,
            sample_idx=sample.index,
            mode=self.config.mode,
            prompt={"messages": sample.messages, "text": sample.prompt_text, "template": sample.template,
                    "tokens": sample.prompt_token_count},
            golden=sample.golden,
            predicted=predicted,
            comparison=comparison.to_dict(),
            gpu_memory=memory_label(memory),
            memory=memory,
            timestamp=datetime.fromtimestamp(now, tz=timezone.utc).isoformat(),
            time=now,
            notes=sample.notes + ([note] if note else []),
        )

    def _write(self, monitor: PluginHost, record: dict[str, Any]) -> None:
        monitor.guard.run("writing training_detail.json", rf.write_json_atomic, monitor.paths.detail, record)
        if self._writer is None:
            self._writer = monitor.guard.run("opening samples.jsonl", rf.JsonlWriter, monitor.paths.samples)
        if self._writer is not None:
            monitor.guard.run("appending to samples.jsonl", self._writer.append, record)


__all__ = ["SamplesConfig", "SamplesPlugin", "SampleError", "as_config", "is_due", "choose_indices", "prepare",
           "normalise_item", "split_chat", "fit_context", "fallback_render", "memory_label", "clean_text",
           "DEFAULT_UPDATE_FREQUENCY", "DEFAULT_NUM_SAMPLES", "DEFAULT_MAX_NEW_TOKENS", "DEFAULT_SEED",
           "DEFAULT_MAX_INPUT_TOKENS", "MODE_TEACHER_FORCED", "MODE_GENERATE", "MODES", "COMPARE_AUTO",
           "COMPARE_METHODS", "PLAIN_TEXT_PROMPT_FRACTION", "FALLBACK_GENERATION_PROMPT"]
