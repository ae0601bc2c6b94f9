"""Benchmark: how well the alert rules tell faults from noise, on the labelled suite of real noisy trainings.

Replays every run of :mod:`bench.alert_suite` (per family, the MLP classifier and the tiny GPT-2: 12 clean,
24 with an injected fault; batch sizes 2-8, log intervals 1 and 5, cosine/linear/constant schedules)
through two detectors side by side:

* **Trainboard** at its defaults (noise-aware rules, events apart from alerts);
* **the guides' rules as written** (the same engine with the noise gate off and every firing an alert).

and prints, per detector: faults caught within their lag limit (5 logged steps for abrupt faults, 20 for
divergence and plateau), false alarms (alerts on clean runs, and on fault runs before the fault), the
median lag in logged steps, and the engine's cost per log step in microseconds.

Run: ``python bench/bench_alerts.py [--quick] [--cache FILE] [--family mlp|lm] [--without-rate]`` (full
suite: about 4 minutes of training on 2 cores for the MLP family, 8 for the LM family; ``--cache`` keeps
the traces in a JSON file so a second run only replays them). ``--without-rate`` replays every run with its
learning rate removed, as a plain loop that logs only its loss and grad norm gives it to the engine (no
warm-up to read, and LR spikes not seen at all).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.alert_suite import FAMILIES, Condition, RunTrace, iter_suite  # noqa: E402
from collectors.anomaly.rules import (EVENT_RULES, AnomalyConfig, Observation, RuleEngine,  # noqa: E402
                                      guide_config)

PLATEAU_RULE = "convergence_plateau"


@dataclass
class RunScore:
    """What one detector did on one run."""

    name: str
    fault: str | None
    caught: bool = False
    lag: int | None = None
    false_alarms: int = 0
    false_rules: list[str] = field(default_factory=list)
    events: int = 0
    late_lag: int | None = None
    """Logged steps to the first catching alert when it came after the lag limit (a miss, but not a silence)."""


def observation(rec: dict[str, Any]) -> Observation:
    """What the collector gives the engine at one logged step of a trace."""
    return Observation(step=rec["step"], loss=rec["loss"], grad_norm=rec["grad_norm"],
                       learning_rate=rec["learning_rate"], weights_changed=rec.get("weights_changed"))


def without_rate(trace: RunTrace) -> RunTrace:
    """The same run as a plain loop that logs no learning rate would give it (every record's rate removed)."""
    return RunTrace(trace.name, trace.fault, trace.fault_step, trace.condition,
                    [dict(rec, learning_rate=None) for rec in trace.records])


def replay(trace: RunTrace, make_engine: Callable[[], RuleEngine], events_apart: bool) -> RunScore:
    """Feed a run's log through a fresh engine and score it against the run's label."""
    eng = make_engine()
    score = RunScore(trace.name, trace.fault)
    fault_index = None
    for i, rec in enumerate(trace.records):
        if trace.fault_step is not None and fault_index is None and rec["step"] >= trace.fault_step:
            fault_index = i
        alerts = eng.observe(observation(rec))
        for a in alerts:
            is_event = events_apart and a.rule in EVENT_RULES
            score.events += is_event
            after_fault = fault_index is not None
            counts_as_catch = not is_event or (trace.fault == "plateau" and a.rule == PLATEAU_RULE)
            if after_fault and counts_as_catch:
                lag = i - fault_index
                if not score.caught and lag <= trace.lag_limit():
                    score.caught, score.lag = True, lag
                elif not score.caught and score.late_lag is None:
                    score.late_lag = lag
            elif not is_event and not after_fault:
                score.false_alarms += 1
                score.false_rules.append(a.rule)
    return score


@dataclass
class Summary:
    detector: str
    caught: int
    faults: int
    false_alarms: int
    clean_runs_with_false_alarms: int
    clean_runs: int
    median_lag: float | None
    events_per_clean_run: float
    missed: list[str]
    false_by_rule: dict[str, int]


def summarize(detector: str, scores: Sequence[RunScore]) -> Summary:
    faults = [s for s in scores if s.fault]
    clean = [s for s in scores if not s.fault]
    lags = [s.lag for s in faults if s.caught and s.lag is not None]
    by_rule: dict[str, int] = {}
    for s in scores:
        for r in s.false_rules:
            by_rule[r] = by_rule.get(r, 0) + 1
    return Summary(detector, sum(s.caught for s in faults), len(faults), sum(s.false_alarms for s in scores),
                   sum(1 for s in clean if s.false_alarms), len(clean),
                   statistics.median(lags) if lags else None,
                   statistics.mean(s.events for s in clean) if clean else 0.0,
                   [s.name + ("" if s.late_lag is None else f" (caught late, at lag {s.late_lag})")
                    for s in faults if not s.caught], dict(sorted(by_rule.items(), key=lambda kv: -kv[1])))


DETECTORS: dict[str, tuple[Callable[[], RuleEngine], bool]] = {
    "Trainboard (defaults)": (lambda: RuleEngine(AnomalyConfig()), True),
    "guides' rules as written": (lambda: RuleEngine(guide_config()), False),
}


def evaluate(traces: Iterable[RunTrace]) -> list[Summary]:
    traces = list(traces)
    return [summarize(name, [replay(t, make, apart) for t in traces]) for name, (make, apart) in DETECTORS.items()]


def cost_per_step_us(traces: Sequence[RunTrace], repeats: int = 3,
                     config: Callable[[], AnomalyConfig] = AnomalyConfig) -> float:
    """Microseconds per observed log step of an engine (defaults), best of ``repeats`` over all runs."""
    obs = [[observation(r) for r in t.records] for t in traces]
    n = sum(len(o) for o in obs)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for run in obs:
            eng = RuleEngine(config())
            for o in run:
                eng.observe(o)
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def load_or_make(cache: Path | None, quick: bool, seed_offset: int = 0,
                 families: Sequence[str] = FAMILIES) -> list[RunTrace]:
    """The suite's traces of ``families``: from ``cache`` when it holds them, else trained now (and the
    cache rewritten with what it lacked; a cache from before the LM family gains it on the next run)."""
    traces: list[RunTrace] = []
    if cache is not None and cache.exists():
        data = json.loads(cache.read_text())
        traces = [RunTrace(d["name"], d["fault"], d["fault_step"], Condition(**d["condition"]), d["records"])
                  for d in data]
    have = {t.condition.model for t in traces}
    missing = [f for f in families if f not in have]
    if missing:
        traces += list(iter_suite(quick=quick, seed_offset=seed_offset, families=missing))
        if cache is not None:
            tmp = cache.with_suffix(".tmp")
            tmp.write_text(json.dumps([asdict(t) for t in traces]))
            tmp.replace(cache)
    return [t for t in traces if t.condition.model in families]


def report(summaries: Sequence[Summary], cost_us: float | None = None, guide_cost_us: float | None = None) -> str:
    """The detectors' table and what each missed; the rules' cost line when ``cost_us`` is given."""
    lines = [f"{'detector':28} {'caught':>9} {'false alarms':>13} {'clean runs w/ FA':>17} {'median lag':>11} "
             f"{'events/clean run':>17}"]
    for s in summaries:
        lag = "-" if s.median_lag is None else f"{s.median_lag:g}"
        lines.append(f"{s.detector:28} {s.caught:>4}/{s.faults:<4} {s.false_alarms:>13} "
                     f"{s.clean_runs_with_false_alarms:>10}/{s.clean_runs:<6} {lag:>11} {s.events_per_clean_run:>17.1f}")
    for s in summaries:
        lines.append(f"  {s.detector}: missed {s.missed or 'none'}; false alarms by rule {s.false_by_rule or 'none'}")
    if cost_us is not None and guide_cost_us is not None:
        lines.append(f"cost of all rules at defaults: {cost_us:.1f} µs per log step (goal ≤ 50 µs); the guides' "
                     f"rules as written: {guide_cost_us:.1f} µs (ratio {cost_us / guide_cost_us:.2f})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one clean run and one run per fault (harness check)")
    p.add_argument("--cache", type=Path, default=None, help="JSON file to keep/reuse the traces")
    p.add_argument("--seed-offset", type=int, default=0,
                   help="draw a held-out suite (the defaults were chosen on 0; default %(default)s)")
    p.add_argument("--family", choices=FAMILIES, action="append", default=None,
                   help="only this family of runs (repeatable; default: all, %(choices)s)")
    p.add_argument("--without-rate", action="store_true",
                   help="replay the runs with their learning rate removed (a plain loop that logs none)")
    args = p.parse_args(argv)
    families = tuple(args.family or FAMILIES)
    traces = load_or_make(args.cache, args.quick, args.seed_offset, families)
    if args.without_rate:
        traces = [without_rate(t) for t in traces]
        print("replayed without the learning rate (as a plain loop that logs only its loss and grad norm)")
    summaries = evaluate(traces)
    # interleaved rounds, best of each: this machine's speed drifts over seconds, and both share the drift
    rounds = [(cost_per_step_us(traces, 1), cost_per_step_us(traces, 1, config=guide_config)) for _ in range(7)]
    print(report(summaries, min(r[0] for r in rounds), min(r[1] for r in rounds)))
    if len(families) > 1:
        for family in families:
            part = [t for t in traces if t.condition.model == family]
            print(f"\n{family} runs only ({len(part)}):")
            print(report(evaluate(part)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
