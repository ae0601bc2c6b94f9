"""Beyond one process: per-rank health, stragglers, silent ranks and stalled trainings (issue 13).

Every process of a ``torchrun`` training runs a :class:`RanksPlugin`. At each log step it appends one
``rank`` record to its own file, ``ranks/rank-<N>.jsonl`` in the run dir (step time, data wait, time spent
outside collectives, memory, its own loss, a non-finite flag), and touches that file every few seconds
from a small thread (a heartbeat). World rank 0 also runs a watchdog thread that tails every rank's
file, applies the rules and writes ordinary alerts through :class:`collectors.alerts.AlertLog` (so they
join incidents and notifications): ``straggler``, ``rank_non_finite``, ``rank_silent`` and, for every
run including single-process ones, ``stalled``.

Why files, not a collective (docs/ranks.md has the long form): a collective at a log step needs every
rank to call it in the same order; a dead rank, a rank whose collector failed before the call, or a rank
that disagrees about ``ranks=`` makes the others wait for the process group's timeout, inside the
training. A file append cannot wait for another process, a dead rank simply stops writing (which is the
``rank_silent`` signal), and the cost is one small write per log step. The price: nodes must share the
run dir's filesystem; a rank whose file never appears is reported ("never reported") instead.

The decisions are pure (:class:`RankRules`, :func:`stall_threshold`, :func:`judge_stall`) and tested
without threads; the dashboard imports the stall rule from here, so both sides use one threshold.
"""
from __future__ import annotations

import math
import os
import socket
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable, Mapping

from collectors import runformat as rf
from collectors.alerts import SOURCE_COLLECTOR, Alert, AlertLog
from collectors.runtime import Guard, process_memory, world_rank

STRAGGLER_FACTOR = 1.5
"""A rank is slow at a log step when its time per step exceeds this × the median of the other ranks."""
STRAGGLER_STEPS = 3
"""...for this many consecutive log steps before ``straggler`` fires."""
STRAGGLER_MIN_EXCESS_S = 0.01
"""...and by at least this many seconds per step (tiny steps jitter by large factors)."""
SILENT_AFTER_S = 30.0
"""``rank_silent``: a rank whose file (appended at each log, touched every :data:`HEARTBEAT_S`) is older."""
HEARTBEAT_S = 5.0
"""How often each rank touches its file and rank 0 rewrites the status while no step completes."""
CHECK_S = 1.0
"""How often rank 0's watchdog reads the rank files and judges stalls."""
STALL_FACTOR = 5.0
"""``stalled``: no step completed for this × the recent typical log interval..."""
STALL_MIN_S = 60.0
"""...and at least this long (the environment variable :data:`STALL_MIN_ENV` overrides it, both sides)."""
STALL_WINDOW = 20
"""How many recent log intervals make "the recent typical log interval" (their median)."""
STALL_MIN_ENV = "TRAINBOARD_STALL_MIN_S"
STALL_FACTOR_ENV = "TRAINBOARD_STALL_FACTOR"
PHASES = ("evaluating", "saving")
"""Phases the collector marks in the status (``phase``): a long one is not a stall."""
CATEGORY = "ranks"
_HOST = socket.gethostname()
MAX_PENDING_STEPS = 200
"""Log steps kept while waiting for every rank's record of them (a dead rank never completes one)."""


def _env_float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if math.isfinite(value) and value > 0 else default


def stall_defaults() -> tuple[float, float]:
    """``(factor, min_s)`` of the stall rule: the constants, or the environment's overrides."""
    return _env_float(STALL_FACTOR_ENV, STALL_FACTOR), _env_float(STALL_MIN_ENV, STALL_MIN_S)


# --------------------------------------------------------------------------- settings

@dataclass
class RanksConfig:
    """Settings of per-rank health and the stall watchdog (the defaults are the module constants).

    Args:
        straggler_factor: times the other ranks' median step time (default 1.5).
        straggler_steps: consecutive log steps (default 3).
        straggler_min_excess_s: seconds per step above the median, at least (default 0.01).
        silent_after_s: seconds without a record or heartbeat before ``rank_silent`` (default 30).
        heartbeat_s: seconds between heartbeats (default 5).
        check_s: seconds between rank 0's checks (default 1).
        stall_factor: ``stalled`` after this × the typical log interval (default 5)...
        stall_min_s: ...and at least this many seconds (default 60, or ``TRAINBOARD_STALL_MIN_S``).
        stall: run the stall watchdog (default True).

    Raises:
        ValueError: for a non-positive or non-numeric value, naming the field.
    """

    straggler_factor: float = STRAGGLER_FACTOR
    straggler_steps: int = STRAGGLER_STEPS
    straggler_min_excess_s: float = STRAGGLER_MIN_EXCESS_S
    silent_after_s: float = SILENT_AFTER_S
    heartbeat_s: float = HEARTBEAT_S
    check_s: float = CHECK_S
    stall_factor: float = field(default_factory=lambda: stall_defaults()[0])
    stall_min_s: float = field(default_factory=lambda: stall_defaults()[1])
    stall: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "stall":
                continue
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 \
                    or (v == 0 and f.name != "straggler_min_excess_s"):
                raise ValueError(f"RanksConfig({f.name}=...) must be a positive number; got {v!r}")
        if self.straggler_factor <= 1:
            raise ValueError(f"RanksConfig(straggler_factor=...) must be above 1; got {self.straggler_factor!r}")
        self.straggler_steps = int(self.straggler_steps)


def coerce_ranks(option: Any) -> RanksConfig | None:
    """The ``ranks=`` option as settings: ``True``/``None`` the defaults, ``False`` off, a dict or a config.

    Raises:
        ValueError: for anything else, or a dict with an unknown key (the message lists the allowed ones).
    """
    if option is False:
        return None
    if option is None or option is True:
        return RanksConfig()
    if isinstance(option, RanksConfig):
        return option
    if isinstance(option, Mapping):
        allowed = [f.name for f in fields(RanksConfig)]
        unknown = [k for k in option if k not in allowed]
        if unknown:
            raise ValueError(f"ranks= got unknown setting(s) {', '.join(map(str, unknown))}; allowed: {', '.join(allowed)}")
        return RanksConfig(**dict(option))
    raise ValueError(f"ranks= must be True, False, a dict or a RanksConfig; got {option!r}")


# --------------------------------------------------------------------------- who am I

@dataclass(frozen=True)
class WorldInfo:
    """This process's place in the training: what the status and config record about the world."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    ranks_per_node: int = 1
    node_rank: int = 0
    nodes: int = 1
    backend: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _env_int(env: Mapping[str, str], *names: str) -> int | None:
    for n in names:
        v = env.get(n, "")
        if v.isdigit():
            return int(v)
    return None


def world_info(env: Mapping[str, str] | None = None) -> WorldInfo:
    """The world from torch.distributed when initialised, else from the launcher's variables (torchrun:
    ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``; Slurm's too)."""
    env = os.environ if env is None else env
    rank, world, backend = world_rank(), _env_int(env, "WORLD_SIZE", "SLURM_NTASKS") or 1, None
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            world, backend = int(dist.get_world_size()), str(dist.get_backend())
    except Exception:  # noqa: BLE001 - a half-initialised group: the environment still tells
        pass
    local = _env_int(env, "LOCAL_RANK", "SLURM_LOCALID") or 0
    per_node = _env_int(env, "LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE") or (1 if world == 1 else world)
    per_node = max(1, min(per_node, world))
    node = _env_int(env, "GROUP_RANK", "SLURM_NODEID")
    node = rank // per_node if node is None else node
    nodes = _env_int(env, "GROUP_WORLD_SIZE", "SLURM_NNODES") or max(1, math.ceil(world / per_node))
    return WorldInfo(rank=rank, world_size=world, local_rank=local, ranks_per_node=per_node, node_rank=node,
                     nodes=nodes, backend=backend)


# --------------------------------------------------------------------------- measuring one rank

def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class RankMeter:
    """Times one rank's steps between log steps. Pure apart from the clock values it is handed.

    A step's ``work`` is the time from the end of the previous step to the end of its last forward pass:
    data loading, step-begin callbacks and the forward pass, none of which waits for another rank in
    DDP. Wall step time cannot find a straggler in synchronous training (every rank waits for the slowest
    in the gradient all-reduce, so all wall times are equal); ``work`` can. Time inside an evaluation or
    a checkpoint save (a marked phase) counts in neither.
    """

    def __init__(self, start: float) -> None:
        self.mark = start
        self.last_log = start
        self.steps = 0
        self.work = 0.0
        self.work_steps = 0
        self.data_wait = 0.0
        self.data_steps = 0
        self.fwd_end: float | None = None
        self.losses = 0.0
        self.loss_count = 0
        self.loss_sum: Any = None
        self.last_loss: Any = None
        self.last_step_at: float | None = None
        self.in_phase = False

    def step_begin(self, t: float) -> None:
        if not self.in_phase and t >= self.mark:
            self.data_wait += t - self.mark
            self.data_steps += 1

    def forward_end(self, t: float, loss: Any = None) -> None:
        if self.in_phase:
            return
        self.fwd_end = t
        if loss is not None:
            self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
            self.loss_count += 1

    def step_end(self, t: float, wall: float) -> None:
        self.steps += 1
        if self.fwd_end is not None and self.fwd_end >= self.mark:
            self.work += self.fwd_end - self.mark
            self.work_steps += 1
        self.fwd_end = None
        self.mark = t
        self.last_step_at = wall

    def phase(self, t: float, phase: str | None) -> None:
        """A phase (evaluating, saving) began or ended: its time is nobody's step time."""
        self.in_phase = phase is not None
        if phase is None:
            self.mark = t

    def take(self, t: float, step_delta: int | None) -> dict[str, Any]:
        """The timing fields of a rank record for the interval since the last log, and start a new one."""
        steps = self.steps or max(step_delta or 0, 0)
        out: dict[str, Any] = {"steps": steps,
                               "step_time_s": (t - self.last_log) / steps if steps else None,
                               "work_s": self.work / self.work_steps if self.work_steps else None,
                               "data_wait_s": self.data_wait / self.data_steps if self.data_steps else None}
        loss: float | None = None
        if self.loss_sum is not None and self.loss_count:
            try:
                loss = float(self.loss_sum.item() if hasattr(self.loss_sum, "item") else self.loss_sum) / self.loss_count
            except (TypeError, ValueError, RuntimeError):
                loss = None
        out["own_loss"] = loss
        self.last_log, self.steps, self.work, self.work_steps = t, 0, 0.0, 0
        self.data_wait, self.data_steps, self.loss_sum, self.loss_count = 0.0, 0, None, 0
        return out


def rank_record(world: WorldInfo, step: int, wall: float, timing: Mapping[str, Any], memory: Mapping[str, float],
                metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One ``rank`` record (pure). ``loss`` is the rank's own (its forward passes) when measured, else the
    logged one; ``non_finite`` is set when that loss or the logged loss/grad norm is NaN/Inf."""
    loss = timing.get("own_loss")
    if loss is None and metrics.get("loss") is not None and not metrics.get(rf.LOSS_REPLACED):
        loss = metrics.get("loss")
    checked = [loss, metrics.get("grad_norm")]
    non_finite = any(isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v) for v in checked) \
        or bool(metrics.get(rf.LOSS_REPLACED))
    fields_ = {k: v for k, v in timing.items() if k != "own_loss"}
    return rf.make_record(rf.RecordKind.RANK, rank=world.rank, step=step, time=wall, node=world.node_rank,
                          local_rank=world.local_rank, host=_HOST, pid=os.getpid(), loss=loss,
                          non_finite=non_finite, **fields_, **{k: memory[k] for k in sorted(memory)})


class RankMemory:
    """Memory in GB for a rank record, cheaply: RSS from ``/proc/self/statm`` through a kept descriptor
    (about 7 µs; :func:`collectors.runtime.process_memory` builds a psutil object each call, about 200 µs,
    which at one record per step is most of the per-rank cost), CUDA allocated/peak when in use. Falls back
    to ``process_memory`` where there is no ``/proc``."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._page = 4096
        try:
            self._fd = os.open("/proc/self/statm", os.O_RDONLY)
            self._page = os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            self._fd = None

    def read(self) -> dict[str, float]:
        if self._fd is None:
            return process_memory()
        out: dict[str, float] = {}
        try:
            out["rss_gb"] = int(os.pread(self._fd, 256, 0).split()[1]) * self._page / 1024**3
        except (OSError, ValueError, IndexError):
            return process_memory()
        torch = sys.modules.get("torch")
        try:
            if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
                out["cuda_allocated_gb"] = torch.cuda.memory_allocated() / 1024**3
                out["cuda_peak_gb"] = torch.cuda.max_memory_allocated() / 1024**3
        except Exception:  # noqa: BLE001 - memory is a nice-to-have in a record, never a failure
            pass
        return out

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


# --------------------------------------------------------------------------- the rules (pure)

def rank_time(rec: Mapping[str, Any]) -> float | None:
    """The number a rank is compared on: its work per step when measured, else its wall step time."""
    for key in ("work_s", "step_time_s"):
        v = rec.get(key)
        if _finite(v) and v >= 0:
            return float(v)
    return None


class RankRules:
    """``straggler``, ``rank_non_finite`` and ``rank_silent`` over the rank records, fed in any order.

    Args:
        config: factors and times.
        world_size: ranks expected (a rank never seen is reported once it is overdue).
        started: wall time the run started (for "never reported").

    Example:
        >>> rules = RankRules(RanksConfig(straggler_steps=1), world_size=2, started=0.0)
        >>> out = rules.feed([{"rank": 0, "step": 5, "work_s": 0.1}, {"rank": 1, "step": 5, "work_s": 0.5}])
        >>> out[0].rule, out[0].metadata["rank"]
        ('straggler', 1)
    """

    def __init__(self, config: RanksConfig, world_size: int, started: float) -> None:
        self.config = config
        self.world_size = max(int(world_size), 1)
        self.started = started
        self.pending: dict[int, dict[int, float]] = {}
        self.consecutive: dict[int, int] = {}
        self.fired_straggler: set[int] = set()
        self.non_finite: dict[int, int] = {}
        """Ranks whose values were non-finite, with the first step seen."""
        self._nf_active: set[int] = set()
        self.silent: set[int] = set()
        self.last: dict[int, dict[str, Any]] = {}
        self.slowest: dict[str, Any] | None = None
        self.closed: set[int] = set()

    def feed(self, records: Iterable[Mapping[str, Any]]) -> list[Alert]:
        out: list[Alert] = []
        for rec in records:
            r, step = rec.get("rank"), rec.get("step")
            if not isinstance(r, int) or isinstance(r, bool) or not isinstance(step, int):
                continue
            if rec.get("final"):
                self.closed.add(r)
                continue
            self.last[r] = dict(rec)
            self.silent.discard(r)
            out += self._non_finite(r, step, rec)
            t = rank_time(rec)
            if t is not None:
                self.pending.setdefault(step, {})[r] = t
        out += self._complete_steps()
        return out

    def _non_finite(self, r: int, step: int, rec: Mapping[str, Any]) -> list[Alert]:
        if not rec.get("non_finite"):
            self._nf_active.discard(r)
            return []
        self.non_finite.setdefault(r, step)
        if r in self._nf_active:
            return []
        self._nf_active.add(r)
        loss = rec.get("loss")
        return [Alert("rank_non_finite", CATEGORY, "critical", step, loss if isinstance(loss, float) else None, None,
                      f"Rank {r} had a non-finite loss or gradient norm (loss {loss}) at step {step}, "
                      f"whatever the other ranks' values", metadata={"rank": r, "host": rec.get("host"),
                                                                     "node": rec.get("node")},
                      reason=f"rank_non_finite_rank{r}")]

    def _complete_steps(self) -> list[Alert]:
        """Judge each step every rank has reported (oldest first); drop steps that can never complete."""
        out: list[Alert] = []
        for step in sorted(self.pending):
            times = self.pending[step]
            if len(times) < self.world_size:
                continue
            del self.pending[step]
            out += self.judge_step(step, times)
        while len(self.pending) > MAX_PENDING_STEPS:
            del self.pending[min(self.pending)]
        return out

    def judge_step(self, step: int, times: Mapping[int, float]) -> list[Alert]:
        """The straggler decision at one log step: each rank against the median of the others."""
        out: list[Alert] = []
        if len(times) < 2:
            return out
        slowest = max(times, key=lambda k: times[k])
        others_med = statistics.median([v for k, v in times.items() if k != slowest])
        self.slowest = {"rank": slowest, "step": step, "time_s": times[slowest], "median_s": others_med,
                        "ratio": times[slowest] / others_med if others_med > 0 else None}
        c = self.config
        for r, v in times.items():
            med = statistics.median([x for k, x in times.items() if k != r])
            slow = v > c.straggler_factor * med and v - med >= c.straggler_min_excess_s
            self.consecutive[r] = self.consecutive.get(r, 0) + 1 if slow else 0
            if not slow:
                self.fired_straggler.discard(r)
            elif self.consecutive[r] >= c.straggler_steps and r not in self.fired_straggler:
                self.fired_straggler.add(r)
                ratio = v / med if med > 0 else math.inf
                host = (self.last.get(r) or {}).get("host")
                out.append(Alert(
                    "straggler", CATEGORY, "high", step, v, c.straggler_factor * med,
                    f"Rank {r}{f' ({host})' if host else ''} is a straggler: {v:.3g} s per step against the other "
                    f"ranks' median {med:.3g} s ({ratio:.1f}× slower) for {self.consecutive[r]} consecutive log steps",
                    metadata={"rank": r, "ratio": ratio, "median_s": med, "time_s": v, "host": host,
                              "consecutive": self.consecutive[r]},
                    reason=f"straggler_rank{r}_{ratio:.1f}x"))
        return out

    def check_silent(self, now: float, seen: Mapping[int, float], step: int) -> list[Alert]:
        """``rank_silent`` for ranks whose file is older than the limit (``seen``: rank -> last write or
        heartbeat); a rank never seen counts from the run's start, once some rank other than 0 reported."""
        out: list[Alert] = []
        limit = self.config.silent_after_s
        # only rank 0 ever wrote: the other ranks run no collector (a plain loop that builds its Monitor on
        # rank 0 only), which is not a rank going silent
        others_run_it = any(r != 0 for r in seen) or any(r != 0 for r in self.last)
        for r in range(self.world_size):
            if r in self.closed or r in self.silent:
                continue
            last = seen.get(r)
            if last is None and not others_run_it:
                continue
            age = now - (self.started if last is None else last)
            if age <= limit:
                continue
            self.silent.add(r)
            if last is None:
                msg = (f"Rank {r} never reported in {age:.0f} s: it has not started, or its node does not share "
                       f"the run dir's filesystem")
            else:
                prev = self.last.get(r) or {}
                msg = (f"Rank {r}{' (' + str(prev.get('host')) + ', pid ' + str(prev.get('pid')) + ')' if prev else ''} "
                       f"has not reported for {age:.0f} s (limit {limit:g} s; last step {prev.get('step', '?')}): "
                       f"its process died or is hung")
            out.append(Alert("rank_silent", CATEGORY, "high", step, age, limit, msg,
                             metadata={"rank": r, "age_s": age, "never": last is None}, reason=f"rank_silent_rank{r}"))
        return out

    def summary(self) -> dict[str, Any]:
        """What the status file says about the ranks (the dashboard reads the files themselves)."""
        return {"reporting": sorted(self.last), "slowest": self.slowest, "non_finite": sorted(self.non_finite),
                "silent": sorted(self.silent)}


# --------------------------------------------------------------------------- the stall rule (pure, both sides)

def typical_interval(times: Iterable[float], window: int = STALL_WINDOW) -> float | None:
    """The median of the last ``window`` gaps between consecutive log times (None with fewer than two)."""
    ts = [float(t) for t in times if _finite(t)]
    recent = ts[-window - 1:]
    gaps = [b - a for a, b in zip(recent, recent[1:]) if b > a]
    return statistics.median(gaps) if gaps else None


def stall_threshold(times: Iterable[float], factor: float | None = None, min_s: float | None = None) -> float:
    """Seconds without a completed step after which a run is stalled: max(factor × typical log interval, min_s)."""
    d_factor, d_min = stall_defaults()
    factor = d_factor if factor is None else factor
    min_s = d_min if min_s is None else min_s
    typical = typical_interval(times)
    return max(factor * typical, min_s) if typical is not None else min_s


@dataclass(frozen=True)
class StallVerdict:
    """``state``: ``"stalled"``, a phase name (``"evaluating"``/``"saving"``) or ``None`` (progressing)."""

    state: str | None
    since: float | None = None
    threshold: float | None = None
    age: float | None = None


def judge_stall(last_progress: float | None, now: float, threshold: float, phase: str | None = None,
                phase_since: float | None = None) -> StallVerdict:
    """Whether a run that should be progressing is stalled (pure). A marked phase is never a stall."""
    if last_progress is None:
        return StallVerdict(None)
    age = now - last_progress
    if phase in PHASES:
        return StallVerdict(phase, phase_since or last_progress, threshold, age)
    if age > threshold:
        return StallVerdict("stalled", last_progress, threshold, age)
    return StallVerdict(None, None, threshold, age)


# --------------------------------------------------------------------------- the plugin

class RanksPlugin:
    """Per-rank health records on every rank, and rank 0's watchdog (rules and stall detection).

    Args:
        config: a :class:`RanksConfig` (default the documented defaults).

    Example:
        >>> mon = Monitor("runs/exp1", ranks=RanksConfig(stall_min_s=120))   # doctest: +SKIP
    """

    def __init__(self, config: RanksConfig | None = None) -> None:
        self.config = config or RanksConfig()
        self.world = WorldInfo()
        self.meter = RankMeter(time.perf_counter())
        self.rules: RankRules | None = None
        self.alerts: AlertLog | None = None
        self.log_times: list[float] = []
        self.stalled_since: float | None = None
        self.stall_alerts = 0
        self._writer: rf.JsonlWriter | None = None
        self._tailers: dict[int, rf.JsonlTailer] = {}
        self._hooked: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._monitor: Any = None
        self._last_step = -1
        self._phase_since: float | None = None
        self._guard = Guard()
        self._lock = threading.Lock()
        self._memory: RankMemory | None = None

    @property
    def multi(self) -> bool:
        return self.world.world_size > 1

    # ------------------------------------------------------------------ hooks (every rank)
    def on_start(self, monitor: Any) -> None:
        self._monitor = monitor
        self._guard = monitor.guard
        self.world = world_info()
        self.meter = RankMeter(time.perf_counter())
        if monitor.is_main:
            ex = monitor.extra_status
            # every key exists from the start, so the watchdog only replaces values (never resizes the dict)
            ex.update({"world": self.world.to_dict(), "phase": None, "last_step_at": None, "heartbeat_at": time.time(),
                       "stalled_since": None, "ranks": None})
            cfg = ex.get("config")
            if isinstance(cfg, dict) and self.multi:  # a single process has no world worth a config column
                cfg.update(world_size=self.world.world_size, nodes=self.world.nodes,
                           ranks_per_node=self.world.ranks_per_node, backend=self.world.backend)
            self.alerts = AlertLog(monitor.paths.alerts, source=SOURCE_COLLECTOR, guard=monitor.guard,
                                   notifier=getattr(monitor, "notifier", None))
            self.rules = RankRules(self.config, self.world.world_size, time.time())
        if self.multi:
            self._memory = RankMemory()
            self._writer = self._guard.run("opening the rank health file", rf.JsonlWriter,
                                           monitor.paths.rank_file(self.world.rank))
        self._hook(monitor.model)
        if self.multi or (monitor.is_main and self.config.stall):
            self._thread = threading.Thread(target=self._watch, name="trainboard-ranks", daemon=True)
            self._thread.start()

    def _hook(self, model: Any) -> None:
        """A forward hook on the (unwrapped) model: the end of each forward pass and the rank's own loss."""
        if model is None or self._hooked is not None or not hasattr(model, "register_forward_hook"):
            return
        meter = self.meter
        per_rank_loss = self.multi  # only the rank health file reads the summed loss (two ops per forward)

        def after_forward(module: Any, _args: Any, output: Any) -> None:
            if not getattr(module, "training", True):
                return
            loss = None
            if per_rank_loss:
                loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
                if loss is not None and hasattr(loss, "detach"):
                    loss = loss.detach().float()
            meter.forward_end(time.perf_counter(), loss)

        self._hooked = model.register_forward_hook(after_forward)

    def on_step_begin(self, monitor: Any, step: int) -> None:
        self.meter.step_begin(time.perf_counter())

    def on_step_end(self, monitor: Any, step: int) -> None:
        if self._hooked is None:
            self._hook(monitor.model)
        self.meter.step_end(time.perf_counter(), time.time())
        if self.stalled_since is not None:  # progress again: the next status write says so
            self.stalled_since = None
            if monitor.is_main:
                monitor.extra_status["stalled_since"] = None

    def on_phase(self, monitor: Any, phase: str | None) -> None:
        self.meter.phase(time.perf_counter(), phase)
        self._phase_since = time.time() if phase is not None else None

    def on_rank_record(self, monitor: Any, record: dict[str, Any]) -> None:
        """Every rank, every metrics record: a train record is a log step, so append this rank's health."""
        if record.get("kind") != rf.RecordKind.TRAIN.value:
            return
        wall = time.time()
        with self._lock:
            self.log_times.append(wall)
            del self.log_times[:-STALL_WINDOW - 1]
        if self.meter.steps == 0:
            self.meter.last_step_at = wall  # a plain loop that never calls step_end: a log is a step
        step = int(record.get("step") or 0)
        delta = step - self._last_step if self._last_step >= 0 else None
        self._last_step = step
        if self._writer is None:
            return
        memory = self._memory.read() if self._memory is not None else process_memory()
        rec = rank_record(self.world, step, wall, self.meter.take(time.perf_counter(), delta), memory, record)
        self._guard.run("appending to the rank health file", self._writer.append, rec)

    def on_close(self, monitor: Any, state: rf.RunState) -> None:
        self._stop.set()
        if monitor.is_main and "stalled_since" in monitor.extra_status:  # the final status is written after this
            monitor.extra_status["stalled_since"] = self.stalled_since if state is not rf.RunState.FINISHED else None
            monitor.extra_status["last_step_at"] = self.meter.last_step_at
        if self._writer is not None:
            self._guard.run("closing the rank health file", self._writer.append,
                            rf.make_record(rf.RecordKind.RANK, rank=self.world.rank, step=max(self._last_step, 0),
                                           time=time.time(), final=True, state=state.value))
            self._guard.run("closing the rank health file", self._writer.close)
        if self._memory is not None:
            self._memory.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)  # it wakes at once on _stop; never hold a closing run longer
        if monitor.is_main:
            self._guard.run("reading the rank files", self.poll_ranks, time.time())
        if self._hooked is not None:
            self._guard.run("removing the forward hook", self._hooked.remove)
            self._hooked = None

    # ------------------------------------------------------------------ the watchdog thread
    def _watch(self) -> None:
        next_beat = 0.0
        while not self._stop.wait(self.config.check_s):
            now = time.time()
            mon = self._monitor
            if mon is None or mon.closed:
                return
            beat = now >= next_beat
            if beat:
                next_beat = now + self.config.heartbeat_s
                if self._writer is not None:
                    self._guard.run("touching the rank health file", os.utime, self._writer.path)
            if not mon.is_main:
                continue
            if self.multi:
                self._guard.run("reading the rank files", self.poll_ranks, now)
            if self.config.stall:
                self._guard.run("judging a stall", self.check_stall, now)
            ex = mon.extra_status
            ex["last_step_at"] = self.meter.last_step_at
            ex["stalled_since"] = self.stalled_since
            if self.rules is not None and self.multi:
                ex["ranks"] = self.rules.summary()
            if beat or self.stalled_since is not None:
                ex["heartbeat_at"] = now
                heartbeat = getattr(mon, "heartbeat", None)
                if callable(heartbeat):
                    self._guard.run("rewriting the status (heartbeat)", heartbeat)

    def poll_ranks(self, now: float) -> None:
        """Read what every rank appended since the last poll and apply the rules (rank 0)."""
        if self._monitor is None or self.rules is None:
            return
        d = self._monitor.paths.ranks_dir
        seen: dict[int, float] = {}
        records: list[dict[str, Any]] = []
        try:
            names = os.listdir(d)
        except OSError:
            names = []
        for name in names:
            r = rf.rank_of_file(name)
            if r is None:
                continue
            tailer = self._tailers.get(r)
            if tailer is None:
                tailer = self._tailers[r] = rf.JsonlTailer(d / name, known_kinds={rf.RecordKind.RANK.value})
            got, _reset = tailer.poll()
            records += got
            try:
                seen[r] = os.stat(d / name).st_mtime
            except OSError:
                pass
        with self._lock:
            alerts = self.rules.feed(records)
            if self._stop.is_set():
                self.rules.closed.update(range(self.world.world_size))
            alerts += self.rules.check_silent(now, seen, self._monitor.tracker.step)
        if alerts and self.alerts is not None:
            self.alerts.write(alerts)

    def check_stall(self, now: float) -> StallVerdict:
        """The collector's stall judgement (rank 0): alert once per stall, mark ``stalled_since``."""
        mon = self._monitor
        with self._lock:
            times = list(self.log_times)
        threshold = stall_threshold(times, self.config.stall_factor, self.config.stall_min_s)
        phase = mon.extra_status.get("phase") if mon is not None else None
        if phase is None and mon is not None and mon.tracker.state == rf.RunState.EVALUATING:
            phase = "evaluating"
        verdict = judge_stall(self.meter.last_step_at, now, threshold, phase, self._phase_since)
        if verdict.state != "stalled":
            self.stalled_since = None
            return verdict
        if self.stalled_since is None:
            self.stalled_since = verdict.since
            self.stall_alerts += 1
            if self.alerts is not None:
                typical = typical_interval(times)
                self.alerts.write([Alert(
                    "stalled", "progress", "high", mon.tracker.step if mon is not None else 0, verdict.age, threshold,
                    f"No training step completed for {verdict.age:.0f} s (limit {threshold:.0f} s = max("
                    f"{self.config.stall_factor:g} × typical log interval "
                    f"{'%.3g s' % typical if typical is not None else 'unknown'}, {self.config.stall_min_s:g} s)) while "
                    f"the process is alive: a hung collective, a blocked data loader or a deadlock?",
                    metadata={"since": verdict.since, "threshold_s": threshold, "typical_interval_s": typical})])
        return verdict
