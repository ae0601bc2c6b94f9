"""A training for the resume proof (issue 11), run as a subprocess: ``crash`` raises at step 30 (the
process dies with the exception, like a real crash), ``resume`` resumes from ``checkpoint-20`` into the
same output dir, ``clean`` runs the same training uninterrupted (the reference).

Usage: python tests/helpers/resume_train.py OUTPUT_DIR crash|resume|clean
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from transformers import TrainerCallback  # noqa: E402

from collectors import MonitorCallback  # noqa: E402
from tests.helpers import recovery_setup as rs  # noqa: E402

MAX_STEPS = 40
CRASH_AT = 30
RESUME_FROM = 20


class Crash(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == CRASH_AT:
            raise RuntimeError(f"injected crash at step {CRASH_AT}")


def main(out: str, mode: str) -> None:
    callbacks = [MonitorCallback()]
    if mode == "crash":
        callbacks.append(Crash())
    t = rs.trainer(out, MAX_STEPS, callbacks=callbacks, logging_steps=2, eval_strategy="steps", eval_steps=5,
                   save_strategy="steps", save_steps=10, learning_rate=1e-3)
    t.train(resume_from_checkpoint=str(Path(out) / f"checkpoint-{RESUME_FROM}") if mode == "resume" else None)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
