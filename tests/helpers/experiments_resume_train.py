"""A small training that checkpoints with CheckpointManager and resumes from the latest checkpoint.

Used by tests/test_experiments_proof.py as a real process that gets killed and restarted. The model has
dropout (global torch RNG) and the data comes from a shuffling DataLoader with its own generator, so an
exact resume needs both the random states and the loader position from the checkpoint.

Usage: python experiments_resume_train.py --exp DIR --steps 30 --save-interval 10 [--pause-at 25]
With --pause-at S it prints ``PAUSED S`` after step S and sleeps, waiting to be killed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from collectors import CheckpointManager, MetricsLogger  # noqa: E402

N_SAMPLES, BATCH, FEATURES = 40, 8, 6
DATA_SEED, LOADER_SEED, MODEL_SEED = 123, 7, 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--exp", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--save-interval", type=int, default=10)
    p.add_argument("--pause-at", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(MODEL_SEED)

    g_data = torch.Generator().manual_seed(DATA_SEED)
    x = torch.randn(N_SAMPLES, FEATURES, generator=g_data)
    y = (x[:, :1] * 2 - x[:, 1:2]).tanh()
    dataset = torch.utils.data.TensorDataset(x, y)
    loader_gen = torch.Generator().manual_seed(LOADER_SEED)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, generator=loader_gen)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                torch.nn.Linear(32, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.7)

    mgr = CheckpointManager(args.exp, save_interval=args.save_interval, keep_last_n=3)
    metrics = MetricsLogger(args.exp, log_interval=1)
    loss_history: list[float] = []
    step, epoch, batch_in_epoch = 1, 0, 0
    epoch_gen_state = loader_gen.get_state()
    ckpt = mgr.load_latest_checkpoint()
    if ckpt:
        step = mgr.restore(ckpt, model, optimizer, scheduler)  # weights, optimizer, scheduler, RNG states
        loss_history = list(ckpt["loss_history"])
        epoch, batch_in_epoch = ckpt["extra"]["epoch"], ckpt["extra"]["batch_in_epoch"]
        epoch_gen_state = ckpt["extra"]["loader_generator_state"]
        print(f"RESUMED {ckpt['step']}", flush=True)

    while step <= args.steps:
        loader_gen.set_state(epoch_gen_state)  # the shuffle of this epoch is drawn from this state
        batches = iter(loader)
        for _ in range(batch_in_epoch):  # skip what the checkpointed run already consumed
            next(batches)
        for xb, yb in batches:
            model.train()
            loss = torch.nn.functional.mse_loss(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            batch_in_epoch += 1
            loss_history.append(loss.item())
            metrics.log_metrics(step, {"loss": loss.item(), "learning_rate": scheduler.get_last_lr()[0]})
            if mgr.should_checkpoint(step):
                mgr.save_checkpoint(step, model, optimizer, loss_history, vars(args), scheduler=scheduler,
                                    extra={"epoch": epoch, "batch_in_epoch": batch_in_epoch,
                                           "loader_generator_state": epoch_gen_state})
            if step == args.pause_at:
                print(f"PAUSED {step}", flush=True)
                time.sleep(600)
            step += 1
            if step > args.steps:
                break
        else:
            epoch, batch_in_epoch = epoch + 1, 0
            epoch_gen_state = loader_gen.get_state()
    metrics.close()
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
