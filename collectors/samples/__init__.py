"""Golden vs predicted samples during training, one package like :mod:`collectors.anomaly`.

* :mod:`~collectors.samples.plugin`: :class:`SamplesPlugin` / :class:`SamplesConfig`, the in-training
  feature that takes a sample every N steps and writes ``status/training_detail.json`` and
  ``logs/samples.jsonl`` (docs/samples.md);
* :mod:`~collectors.samples.alignment`: the token-by-token comparison (pure, also used by the dashboard).

The plugin's public names are re-exported, so ``from collectors.samples import SamplesConfig`` works.
"""
from __future__ import annotations

from collectors.samples.plugin import (COMPARE_AUTO, COMPARE_METHODS, DEFAULT_MAX_INPUT_TOKENS, DEFAULT_MAX_NEW_TOKENS,
                                       DEFAULT_NUM_SAMPLES, DEFAULT_SEED, DEFAULT_UPDATE_FREQUENCY,
                                       FALLBACK_GENERATION_PROMPT, MODE_GENERATE, MODE_TEACHER_FORCED, MODES,
                                       PLAIN_TEXT_PROMPT_FRACTION, SampleError, SamplesConfig, SamplesPlugin, as_config,
                                       choose_indices, clean_text, fallback_render, fit_context, is_due, memory_label,
                                       normalise_item, prepare, split_chat)

__all__ = ["COMPARE_AUTO", "COMPARE_METHODS", "DEFAULT_MAX_INPUT_TOKENS", "DEFAULT_MAX_NEW_TOKENS",
           "DEFAULT_NUM_SAMPLES", "DEFAULT_SEED", "DEFAULT_UPDATE_FREQUENCY", "FALLBACK_GENERATION_PROMPT",
           "MODE_GENERATE", "MODE_TEACHER_FORCED", "MODES", "PLAIN_TEXT_PROMPT_FRACTION", "SampleError",
           "SamplesConfig", "SamplesPlugin", "as_config", "choose_indices", "clean_text", "fallback_render",
           "fit_context", "is_due", "memory_label", "normalise_item", "prepare", "split_chat"]
