"""Later saves of one model's weights written as its first ``save_pretrained`` wrote them, without the
Python that ``save_pretrained`` runs each time.

A training that logs every step can reach a new best loss several times in 100 steps, and every best is a
snapshot. Transformers' ``save_pretrained`` of a tiny GPT-2 costs 4-25 ms of Python per call here (the
config and generation-config JSON, the weight-conversion mapping, the tied-weight and shard planning) and
only ~1.5 ms of it is the safetensors write. That Python runs on the snapshot thread but holds the GIL,
so the training thread waits for it: in the plain-loop benchmark (``bench/bench_overhead.py --plain``) it
was the largest part of the collector's cost.

:class:`RepeatSaver` saves the first copy with ``save_pretrained`` and learns from what it wrote: which
files, which tensor names, the safetensors metadata, the JSON bytes. It takes that as a template only when
re-writing it is provably the same: a single ``model.safetensors`` (no shards, no index), every tensor in
it is the state-dict tensor of that name with the same dtype, shape and *values* (so no weight conversion
changed anything), and nothing else but the JSON files. Later saves of a state dict with the same names,
dtypes, shapes and tied groups, while the config and generation config are unchanged, write the tensors
with ``safetensors.torch.save_file`` and the JSON bytes as they were; anything else goes through
``save_pretrained`` again (and a new template is learnt from it). ``tests/test_repeat_save.py`` checks
that both paths give byte-identical files.
"""
from __future__ import annotations

import json
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from collectors.snapshots.last_good import tensors_bytes

WEIGHTS_FILE = "model.safetensors"
JSON_FILES = frozenset({"config.json", "generation_config.json"})
"""The only other files a template may hold (their bytes are written again as they were)."""
MAX_TEMPLATE_BYTES = 1 << 30
"""Weights larger than this are always saved by ``save_pretrained``: learning a template reads the first
save back to compare every value, and the few milliseconds of Python a template saves are nothing beside
the seconds such a write takes anyway."""
MAX_HEADER_BYTES = 100 << 20
"""A safetensors header larger than this is not read (not a file this module wrote)."""


@dataclass(frozen=True)
class SaveTemplate:
    """What one model's ``save_pretrained`` wrote, to be written again for a new copy of its weights (kept
    by :class:`RepeatSaver` under the state-dict signature and config it was learnt from)."""

    tensor_names: tuple[str, ...]
    """The names in ``model.safetensors`` (tied copies left out, as ``save_pretrained`` leaves them)."""
    metadata: dict[str, str] | None
    json_files: tuple[tuple[str, bytes], ...]


def state_signature(state_dict: Mapping[str, Any]) -> tuple:
    """Names, dtypes, shapes and tied groups of a state dict (pure; cheap: no tensor data is read).

    Two state dicts with the same signature are saved by ``save_pretrained`` under the same names."""
    groups: dict[int, int] = {}
    out = []
    for name, t in state_dict.items():
        ptr = t.untyped_storage().data_ptr()
        out.append((name, str(t.dtype), tuple(t.shape), groups.setdefault(ptr, len(groups))))
    return tuple(out)


def config_key(model: Any) -> tuple:
    """The model's config and generation config as they are now (any attribute change changes it)."""
    def of(obj: Any) -> str:
        return "" if obj is None else repr(sorted(vars(obj).items(), key=lambda kv: kv[0]))
    return (of(getattr(model, "config", None)), of(getattr(model, "generation_config", None)))


def read_safetensors_header(path: Path) -> dict[str, Any] | None:
    """The JSON header of a safetensors file, or None when it is not one this module can read."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                return None
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                return None
            doc = json.loads(f.read(n))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


SAFETENSORS_DTYPES = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16",
                      "torch.float64": "F64", "torch.int64": "I64", "torch.int32": "I32", "torch.int16": "I16",
                      "torch.int8": "I8", "torch.uint8": "U8", "torch.bool": "BOOL"}
"""torch dtypes and the names safetensors writes for them; any other dtype is never templated."""


def learn_template(out_dir: Path, state_dict: Mapping[str, Any]) -> SaveTemplate | None:
    """A template from the files ``save_pretrained`` just wrote to ``out_dir`` for ``state_dict``, or None
    when writing them again by hand could differ (see the module docstring)."""
    import torch
    from safetensors import safe_open

    try:
        names = set(os.listdir(out_dir))
    except OSError:
        return None
    if WEIGHTS_FILE not in names or not names - {WEIGHTS_FILE} <= JSON_FILES:
        return None  # shards, an index, an adapter, or something this module does not know
    header = read_safetensors_header(out_dir / WEIGHTS_FILE)
    if header is None:
        return None
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        return None
    for name, entry in header.items():
        t = state_dict.get(name)
        if (t is None or not isinstance(entry, dict) or entry.get("dtype") != SAFETENSORS_DTYPES.get(str(t.dtype))
                or list(entry.get("shape") or []) != list(t.shape)):
            return None
    try:
        with safe_open(str(out_dir / WEIGHTS_FILE), framework="pt") as f:
            for name in header:
                if not torch.equal(f.get_tensor(name), state_dict[name].detach().cpu()):
                    return None  # a conversion changed the values: only save_pretrained knows how
        json_files = tuple((n, (out_dir / n).read_bytes()) for n in sorted(names & JSON_FILES))
    except (OSError, RuntimeError, ValueError):
        return None
    return SaveTemplate(tensor_names=tuple(sorted(header)), metadata=metadata, json_files=json_files)


def write_from_template(template: SaveTemplate, state_dict: Mapping[str, Any], out_dir: Path) -> None:
    """Write ``state_dict`` to ``out_dir`` as the template's ``save_pretrained`` did."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {name: state_dict[name].contiguous() for name in template.tensor_names}
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata=template.metadata)
    for name, data in template.json_files:
        (out_dir / name).write_bytes(data)


MAX_TEMPLATES = 8
"""Templates kept per process (one per model architecture and config in use; the oldest goes first)."""


class RepeatSaver:
    """Saves CPU copies of a model's weights: the first (and any that differs) with ``save_pretrained``,
    the rest from a :class:`SaveTemplate` (see the module docstring). Thread-safe.

    The templates are shared by every saver of the process, keyed by the model's class, its state-dict
    signature and its config: a second ``Monitor`` of the same model (a sweep of trials in one process)
    does not pay for a first ``save_pretrained`` again.

    Attributes:
        fast_saves: saves this saver wrote from a template.
        full_saves: saves that went through ``save_pretrained``.
    """

    _lock = threading.Lock()
    _templates: dict[tuple, SaveTemplate | None] = {}
    """Per (class, signature, config): the template, or None when that save cannot be templated."""

    def __init__(self) -> None:
        self.fast_saves = 0
        self.full_saves = 0

    @staticmethod
    def _key(model: Any, signature: tuple) -> tuple:
        cls = type(model)
        return (cls.__module__, cls.__qualname__, signature, config_key(model))

    @classmethod
    def forget(cls) -> None:
        """Drop every template (tests; a process that changed its models' configs in place needs nothing)."""
        with cls._lock:
            cls._templates.clear()

    def save(self, model: Any, out_dir: Path, state_dict: Mapping[str, Any],
             full_save: Callable[[], None]) -> bool:
        """Write ``state_dict`` of ``model`` to ``out_dir``; ``full_save`` is its ``save_pretrained`` call.
        Returns True when a template wrote it."""
        signature = state_signature(state_dict)
        key = self._key(model, signature)
        with self._lock:
            known = key in self._templates
            template = self._templates.get(key)
        if template is not None:
            write_from_template(template, state_dict, out_dir)
            self.fast_saves += 1
            return True
        full_save()
        self.full_saves += 1
        if not known:  # save_pretrained fills a few config fields: the template is keyed by the config after it
            after = self._key(model, signature)
            small = tensors_bytes(state_dict.values()) <= MAX_TEMPLATE_BYTES
            learnt = learn_template(out_dir, state_dict) if small else None
            with self._lock:
                while len(self._templates) >= MAX_TEMPLATES:
                    self._templates.pop(next(iter(self._templates)))
                self._templates[after] = learnt  # None: this one cannot be templated, not tried again
        return False
