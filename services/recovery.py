"""Recovery from a bad-batch fault: the suggested skip range, the resume plan and its code (issue 11).

One owner for what the Recover panel (Snapshots and Alerts pages) and ``trainboard resume`` say, so the
two never disagree:

* :func:`suggest_skip_range` - PaLM's practice (arXiv 2204.02311, §5.1: restart about 100 steps before
  the spike, skip 200–500 batches), scaled to the run's length and log interval (formula below);
* :func:`plan_resume` - what to resume from (a snapshot's last good state or a Trainer checkpoint), at
  which step, skipping which steps; raises :class:`RecoveryError` naming the problem for bad input;
* :func:`resume_code` - the exact code for that run (Trainer or plain loop), filled in from the run's
  status (output dir, run dir);
* :func:`main` - ``trainboard resume RUN --from SNAPSHOT_OR_CHECKPOINT [--skip-batches A-B]``.

Pure except for :func:`plan_resume` / :func:`main`, which read a few small files. No dash, no torch.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from collectors import runformat as rf
from collectors.recovery import SkipRange, parse_skip_range

PALM_TRAINING_STEPS = 255_000
"""PaLM 540B's training length in steps (arXiv 2204.02311, Table 2 / §4: 255k steps)."""
PALM_SKIP_BATCHES = 350
"""The middle of PaLM's 200–500 skipped batches."""
SKIP_FRACTION = PALM_SKIP_BATCHES / PALM_TRAINING_STEPS
"""Skip this fraction of the run's length (≈0.14 %): PaLM's practice scaled to the run."""
SKIP_MAX_STEPS = 500
"""Never suggest more than PaLM's largest skip."""
SKIP_MIN_LOG_WINDOWS = 2
"""Suggest at least this many logging intervals: a logged loss averages a whole interval, so the bad
batch can be any of its steps, and the step after it is suspect too."""
DEFAULT_RUN_LENGTH = 1000
"""Run length assumed when neither the status nor the metrics say how long the run is."""


class RecoveryError(ValueError):
    """Bad input for a resume (unknown run, snapshot without a last good state, bad range...), in words."""


# --------------------------------------------------------------------------- the suggested range (pure)

@dataclass(frozen=True)
class SkipSuggestion:
    """A suggested skip range with the reasoning shown next to it."""

    range: SkipRange
    restart_step: int
    why: str


def suggest_skip_range(*, onset_step: int, restart_step: int, run_length: int | None = None,
                       log_interval: int | None = None, suspect_steps: Sequence[int] | None = None) -> SkipSuggestion:
    """The steps to skip after restarting from ``restart_step`` (the last good state). Pure.

    Formula (PaLM §5.1 scaled): ``n = clamp(round(run_length × 350 / 255 000), 2 × log_interval, 500)``
    steps are skipped, starting at the first suspect step: the first step of the suspected range when
    the snapshot names one, else the first step of the logging interval whose loss showed the fault
    (``onset - log_interval + 1``), never before ``restart_step + 1`` (what the restart weights already
    saw cannot be skipped). The range always covers the whole suspected range.

    Args:
        onset_step: the step whose logged metrics first showed the fault.
        restart_step: the step of the state the training restarts from (must be before the onset).
        run_length: the run's planned optimizer steps (``max_steps``); default 1000.
        log_interval: steps between two logged losses; default 1.
        suspect_steps: ``[first, last]`` of the suspected bad batches, when known.

    Raises:
        RecoveryError: when the restart state is not before the onset.
    """
    if restart_step >= onset_step:
        raise RecoveryError(f"the restart state (step {restart_step}) is not before the fault's onset (step "
                            f"{onset_step}): its weights already carry the fault; resume from an earlier checkpoint")
    length = run_length if run_length and run_length > 0 else DEFAULT_RUN_LENGTH
    interval = max(int(log_interval or 1), 1)
    n = max(round(length * SKIP_FRACTION), SKIP_MIN_LOG_WINDOWS * interval, 1)
    n = min(n, SKIP_MAX_STEPS)
    first = onset_step - interval + 1
    last_suspect = onset_step
    if suspect_steps and len(suspect_steps) == 2 and all(isinstance(v, int) for v in suspect_steps):
        first, last_suspect = min(first, int(suspect_steps[0])), max(onset_step, int(suspect_steps[1]))
    first = max(first, restart_step + 1)
    last = max(first + n - 1, last_suspect)
    why = (f"PaLM skipped 200–500 batches of a 255k-step run after restarting ~100 steps before a spike; scaled to "
           f"this run ({length:,} steps, logged every {interval}) that is {last - first + 1} steps, from the first "
           f"suspect step {first}")
    return SkipSuggestion(SkipRange(first, last), restart_step, why)


# --------------------------------------------------------------------------- the plan

@dataclass
class ResumePlan:
    """What ``trainboard resume`` prints and the Recover panel shows."""

    run_dir: Path
    source: Path
    source_kind: str
    """``checkpoint`` (weights + optimizer + scheduler + RNG + trainer_state: a full Trainer resume) or
    ``weights`` (a model dir only: the optimizer restarts)."""
    step: int | None
    skip: SkipRange | None
    trainer: bool
    """Whether the run was a Trainer run (MonitorCallback); else a plain loop with Monitor."""
    output_dir: str | None = None
    suggestion: SkipSuggestion | None = None
    notes: list[str] = field(default_factory=list)
    source_arg: str | None = None
    """What ``--from`` names (the snapshot's name for a snapshot), for :func:`resume_command`."""


def _step_of_checkpoint(path: Path) -> int | None:
    doc, _ = rf.read_trainer_state(path / rf.HF_TRAINER_STATE)
    gs = (doc or {}).get("global_step")
    if isinstance(gs, int) and not isinstance(gs, bool):
        return gs
    return rf.checkpoint_step(path.name) if path.name.startswith(rf.HF_CHECKPOINT_PREFIX) else None


def run_facts(run_dir: Path) -> dict[str, Any]:
    """What the run's status says that a resume needs: ``config`` (output_dir, max_steps, logging...)."""
    doc, _ = rf.read_json(rf.RunPaths.of(run_dir).status)
    return doc if isinstance(doc, dict) else {}


def is_trainer_run(status: Mapping[str, Any]) -> bool:
    cfg = status.get("config") if isinstance(status.get("config"), dict) else {}
    return "output_dir" in cfg and "gradient_accumulation_steps" in cfg


def snapshot_recovery(metadata: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """``(last_good, problem)`` from a snapshot's metadata.json: the last good state's record when it is
    usable, else why not (in words). Pure."""
    lg = metadata.get("last_good")
    if not isinstance(lg, dict):
        missing = metadata.get("last_good_missing")
        why = f": {missing}" if isinstance(missing, str) and missing else ""
        return None, f"this snapshot holds no last good state{why}"
    step = lg.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return None, "this snapshot's last good state has no valid step in metadata.json"
    if not isinstance(lg.get("path"), str) or not lg["path"] or os.path.isabs(lg["path"]) or ".." in Path(lg["path"]).parts:
        return None, "this snapshot's last good state has no valid path in metadata.json"
    return dict(lg), None


def suggestion_for(metadata: Mapping[str, Any], restart_step: int, run_length: int | None,
                   log_interval: int | None) -> SkipSuggestion | None:
    """The suggested range for a snapshot's fault, or None when its metadata names no onset. Pure."""
    onset = metadata.get("onset_step")
    if not isinstance(onset, int) or isinstance(onset, bool):
        onset = metadata.get("step") if isinstance(metadata.get("step"), int) else None
    if onset is None or onset <= restart_step:
        return None
    suspect = metadata.get("suspect_steps")
    suspect = suspect if isinstance(suspect, list) and len(suspect) == 2 and all(isinstance(v, int) for v in suspect) else None
    return suggest_skip_range(onset_step=onset, restart_step=restart_step, run_length=run_length,
                              log_interval=log_interval, suspect_steps=suspect)


def run_length_of(status: Mapping[str, Any]) -> int | None:
    cfg = status.get("config") if isinstance(status.get("config"), dict) else {}
    ms = cfg.get("max_steps")
    return ms if isinstance(ms, int) and not isinstance(ms, bool) and ms > 0 else None


def log_interval_of(run_dir: Path, limit: int = 200) -> int | None:
    """The most common gap between logged train steps among the first ``limit`` train records."""
    steps: list[int] = []
    try:
        for rec in rf.iter_records(rf.RunPaths.of(run_dir).metrics):
            if rec.get("kind") == rf.RecordKind.TRAIN.value and isinstance(rec.get("step"), int):
                steps.append(rec["step"])
                if len(steps) >= limit:
                    break
    except OSError:
        return None
    gaps = [b - a for a, b in zip(steps, steps[1:]) if b > a]
    return max(set(gaps), key=gaps.count) if gaps else None


def find_snapshot(run_dir: Path, source: str) -> Path | None:
    """A snapshot directory named ``source`` in the run, or at the path ``source``; None if it is neither."""
    cand = rf.RunPaths.of(run_dir).snapshots_dir / source
    if "/" not in source and "\\" not in source and (cand / rf.SNAPSHOT_METADATA).is_file():
        return cand
    p = Path(source).expanduser()
    if (p / rf.SNAPSHOT_METADATA).is_file():
        return p
    return None


def find_checkpoint(run_dir: Path, source: str, output_dir: str | None) -> Path | None:
    """A Trainer checkpoint dir at ``source`` (a path, or a ``checkpoint-N`` name looked up in the run's
    output dir, the run dir and its parent); None when there is none."""
    bases = [Path(source).expanduser()]
    if "/" not in source:
        for base in (output_dir, run_dir, run_dir.parent):
            if base:
                bases.append(Path(base) / source)
    for p in bases:
        if (p / rf.HF_TRAINER_STATE).is_file():
            return p
    return None


def plan_resume(run_dir: str | os.PathLike[str], source: str, skip: str | None = None) -> ResumePlan:
    """Plan a resume of ``run_dir`` from ``source`` (snapshot name/path or checkpoint), skipping ``skip``.

    Without ``skip``, a snapshot whose metadata names the fault's onset gets the suggested range
    (:func:`suggest_skip_range`); a plain checkpoint gets none.

    Raises:
        RecoveryError: the run or source does not exist, the snapshot has no last good state, the range
            is malformed or ends before it starts, or the range starts at or before the resume step.
    """
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise RecoveryError(f"no run directory at {str(run)!r}")
    if not rf.is_run_dir(run):
        raise RecoveryError(f"{str(run)!r} is not a Trainboard run directory (no {rf.STATUS_FILE} or {rf.METRICS_LOG})")
    if not isinstance(source, str) or not source.strip():
        raise RecoveryError("--from needs a snapshot name, a snapshot directory or a Trainer checkpoint directory")
    status = run_facts(run)
    cfg = status.get("config") if isinstance(status.get("config"), dict) else {}
    output_dir = cfg.get("output_dir") if isinstance(cfg.get("output_dir"), str) else None
    trainer = is_trainer_run(status)
    length, interval = run_length_of(status), log_interval_of(run)
    notes: list[str] = []
    suggestion: SkipSuggestion | None = None
    snap = find_snapshot(run, source.strip())
    if snap is not None:
        meta, problem = rf.read_json(snap / rf.SNAPSHOT_METADATA)
        if not isinstance(meta, dict):
            raise RecoveryError(f"snapshot {snap.name!r}: cannot read its {rf.SNAPSHOT_METADATA}: {problem or 'not a JSON object'}")
        lg, why = snapshot_recovery(meta)
        if lg is None:
            raise RecoveryError(f"snapshot {snap.name!r}: {why}; resume from a Trainer checkpoint instead "
                                f"(trainboard resume {shlex.quote(str(run))} --from <output_dir>/checkpoint-N)")
        path = snap / lg["path"]
        if not path.is_dir():
            raise RecoveryError(f"snapshot {snap.name!r}: its last good state {str(path)!r} is missing")
        step = int(lg["step"])
        kind = "checkpoint" if lg.get("source") == "checkpoint" and (path / rf.HF_TRAINER_STATE).is_file() else "weights"
        try:
            suggestion = suggestion_for(meta, step, length, interval)
        except RecoveryError as exc:
            notes.append(str(exc))
        if kind == "weights":
            notes.append("this last good state holds the weights only (a rolling copy): the optimizer, scheduler "
                         "and data order start over, so the steps up to the end of the skip range are skipped")
    else:
        ckpt = find_checkpoint(run, source.strip(), output_dir)
        if ckpt is None:
            raise RecoveryError(f"{source!r} is neither a snapshot of this run (in {rf.RunPaths.of(run).snapshots_dir}) "
                                f"nor a Trainer checkpoint directory (with {rf.HF_TRAINER_STATE})")
        path, kind, step = ckpt, "checkpoint", _step_of_checkpoint(ckpt)
        trainer = True
    rng: SkipRange | None = None
    if skip is not None and str(skip).strip():
        try:
            rng = parse_skip_range(str(skip))
        except ValueError as exc:
            raise RecoveryError(f"--skip-batches: {exc}") from None
    elif suggestion is not None:
        rng = suggestion.range
    if rng is not None and step is not None and kind == "checkpoint" and rng.first <= step:
        raise RecoveryError(f"--skip-batches {rng}: the range must start after the resume step {step} (the "
                            f"checkpoint's weights already trained on steps up to {step})")
    return ResumePlan(run, path.resolve(), kind, step, rng, trainer, output_dir, suggestion, notes,
                      snap.name if snap is not None else str(path))


# --------------------------------------------------------------------------- the code (pure)

def resume_code(plan: ResumePlan) -> str:
    """The exact code to resume ``plan``'s run: a Trainer resume or a plain-loop resume. Pure."""
    src = str(plan.source)
    skip = str(plan.skip) if plan.skip else None
    at = f"step {plan.step}" if plan.step is not None else "its checkpoint"
    name = plan.run_dir.parent.name if plan.run_dir.name == "trainboard" and plan.run_dir.parent.name else plan.run_dir.name
    head = [f"# Resume {name} from {at}" +
            (f", never training on the batches of steps {skip}" if skip else "") + "."]
    head += [f"# Note: {n}" for n in plan.notes]
    if plan.trainer and plan.source_kind == "checkpoint":
        out = f" (output_dir={plan.output_dir!r})" if plan.output_dir else ""
        lines = [*head, "from trainboard import MonitorCallback" + (", SkipBatches" if skip else ""), "",
                 f"trainer = Trainer(model=model, args=args, train_dataset=train_dataset)  # as in your script{out}",
                 "trainer.add_callback(MonitorCallback())  # same run dir: one run, with a resume record"]
        if skip:
            lines.append(f"trainer.add_callback(SkipBatches({skip!r}))  # steps as logged; the step keeps counting")
        lines.append(f"trainer.train(resume_from_checkpoint={src!r})")
        return "\n".join(lines)
    if plan.trainer:
        until = plan.skip.last if plan.skip else plan.step
        lines = [*head, "from transformers import AutoModelForCausalLM",
                 "from trainboard import MonitorCallback" + (", SkipBatches" if until else ""), "",
                 f"model = AutoModelForCausalLM.from_pretrained({src!r})  # the weights of step {plan.step}",
                 "trainer = Trainer(model=model, args=args, train_dataset=train_dataset)  # a fresh optimizer",
                 "trainer.add_callback(MonitorCallback())"]
        if until:
            lines.append(f"trainer.add_callback(SkipBatches('1-{until}'))  # data resumes after step {until}")
        lines.append("trainer.train()")
        return "\n".join(lines)
    rng = f", skip_batches={skip!r}" if skip else ""
    lines = [*head, "from trainboard import Monitor", "",
             f"state = torch.load({src!r})  # or model.from_pretrained(...) for a model dir",
             f"monitor = Monitor({str(plan.run_dir)!r}{rng})",
             f"monitor.resumed({plan.step if plan.step is not None else 'start_step'})  # one run, with a resume record",
             "for step, batch in enumerate(loader, start=1):",
             f"    if step <= {plan.step if plan.step is not None else 'start_step'}"
             + (" or monitor.should_skip(step):" if skip else ":"),
             "        continue  # no forward, no optimizer.step(): the optimizer state stays untouched",
             "    ...  # your training step, then monitor.log(step, loss=...)"]
    return "\n".join(lines)


def panel_data(run_dir: str | os.PathLike[str], snapshot: Mapping[str, Any], run_length: int | None = None,
               skip: str | None = None) -> dict[str, Any]:
    """Everything the Recover panel shows for one snapshot, as plain data (never raising). Pure over files.

    Args:
        run_dir: the run directory.
        snapshot: ``{"name": ..., "metadata": {...}}`` (a snapshot row with its metadata).
        run_length: the run's planned steps, when the caller knows it better than the status.
        skip: the range typed by the person; ``None`` uses the suggestion.

    Returns ``{"ok", "last_good_step", "source", "suggested", "why", "skip", "code", "error", "notes"}``.
    """
    meta = snapshot.get("metadata") if isinstance(snapshot.get("metadata"), dict) else {}
    lg, problem = snapshot_recovery(meta)
    out: dict[str, Any] = {"ok": False, "last_good_step": lg.get("step") if lg else None,
                           "source": lg.get("source") if lg else None, "suggested": None, "why": None,
                           "skip": skip, "code": "", "error": problem, "notes": []}
    if lg is None:
        return out
    name = str(snapshot.get("name") or "")
    try:
        base = plan_resume(run_dir, name)
        if run_length and base.suggestion is None:
            base.suggestion = suggestion_for(meta, int(lg["step"]), run_length, log_interval_of(Path(run_dir)))
        out["suggested"] = str(base.suggestion.range) if base.suggestion else None
        out["why"] = base.suggestion.why if base.suggestion else None
        plan = plan_resume(run_dir, name, skip) if skip not in (None, "") else base
        if skip in (None, "") and base.suggestion is not None:
            plan.skip = base.suggestion.range
        out.update(ok=True, skip=str(plan.skip) if plan.skip else "", code=resume_code(plan), error=None,
                   notes=plan.notes, command=resume_command(plan))
    except RecoveryError as exc:
        out["error"] = str(exc)
    return out


def resume_command(plan: ResumePlan) -> str:
    """The ``trainboard resume`` command line that prints :func:`resume_code` for this plan. Pure."""
    argv = ["trainboard", "resume", str(plan.run_dir), "--from", plan.source_arg or str(plan.source)]
    if plan.skip:
        argv += ["--skip-batches", str(plan.skip)]
    return " ".join(shlex.quote(a) for a in argv)


# --------------------------------------------------------------------------- the command

def build_parser(prog: str = "trainboard resume") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Print the exact code that resumes a run from a snapshot's last good state or a "
                               "Trainer checkpoint, skipping a range of batches (issue 11).")
    p.add_argument("run", help="the run directory (with status/ and logs/)")
    p.add_argument("--from", dest="source", required=True,
                   help="a snapshot name of the run, a snapshot directory, or a Trainer checkpoint directory")
    p.add_argument("--skip-batches", dest="skip", default=None,
                   help="optimizer steps (as logged) whose batches are never trained on, FIRST-LAST, e.g. 31-40; "
                        "default: the suggested range for a snapshot, none for a checkpoint")
    return p


def main(argv: Sequence[str] | None = None, prog: str = "trainboard resume") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        plan = plan_resume(args.run, args.source, args.skip)
    except RecoveryError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if plan.suggestion is not None and args.skip is None:
        print(f"# Suggested skip range {plan.suggestion.range}: {plan.suggestion.why}.")
    print(resume_code(plan))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
