"""Run under ``torchrun --nproc_per_node=2``: a real DDP Trainer (gloo, CPU) with MonitorCallback."""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import Trainer  # noqa: E402

from collectors import MonitorCallback  # noqa: E402
from collectors.demo import build_demo, training_arguments  # noqa: E402


def main() -> None:
    base = Path(sys.argv[1])
    setup = build_demo(seed=0, n_train=400, n_eval=32)
    args = training_arguments(str(base / "hf"), 30, logging_steps=2, eval_steps=10, ddp_backend="gloo")
    trainer = Trainer(model=setup.model, args=args, train_dataset=setup.train, eval_dataset=setup.eval,
                      processing_class=setup.tokenizer, callbacks=[MonitorCallback(base_dir=base / "run")])
    trainer.train()
    if trainer.is_world_process_zero():
        import json

        (base / "log_history.json").write_text(json.dumps(trainer.state.log_history))


if __name__ == "__main__":
    main()
