"""Checkpoints you can trust: atomic, verified on load, cleaned up, and resumable bit for bit.

``CheckpointManager`` writes ``checkpoints/checkpoint_step_<N>.pt`` of an experiment directory. Each
save streams ``torch.save`` into a temporary file while computing its CRC-32, fsyncs it, records the
size and CRC in ``checkpoints/manifest.json`` and renames the file into place, then points
``checkpoint_latest.pt`` at it (a symlink, or a small pointer file where links are impossible). A kill
at any instant leaves either the previous checkpoint set or the new one, never a partial file under a
checkpoint name. Loading checks size and CRC (torch itself does not notice flipped bytes inside a
tensor) and falls back to older checkpoints with a warning naming the bad file.

The listing helpers (:func:`scan_checkpoints`, :func:`latest_target`) need no torch: the dashboard's
run sources use them. torch is imported inside the functions that save and load.
"""
from __future__ import annotations

import errno
import logging
import os
import random
import secrets
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from collectors import runformat as rf
from collectors.runtime import Guard, as_number, is_main_process

logger = logging.getLogger("trainboard")

CHECKPOINT_FORMAT_VERSION = 1
DEFAULT_SAVE_INTERVAL = 1000
DEFAULT_KEEP_LAST_N = 3
POINTER_MAGIC = b"TRAINBOARD-CHECKPOINT-POINTER\n"
"""First bytes of a ``checkpoint_latest.pt`` pointer file (used where symlinks cannot be made)."""
POINTER_MAX_BYTES = 4096
READ_CHUNK_BYTES = 8 << 20
STALE_TMP_SECONDS = 600.0
"""Temporary files without a writer pid older than this are removed when a manager starts."""
MANIFEST_VERSIONS_KEPT = 2
REQUIRED_KEYS = ("step", "model_state_dict")
BYTES_PER_MB = 1024 * 1024


# --------------------------------------------------------------------------- pure helpers

@dataclass
class CheckpointEntry:
    """One checkpoint file as listed on disk (no torch needed).

    Attributes:
        step: the step in its file name.
        path: the file.
        size_bytes: its size.
        modified: its modification time (epoch seconds).
        is_latest: ``checkpoint_latest.pt`` points at it.
        metrics: the metrics given to ``save_checkpoint`` (from the manifest), e.g. ``{"val_loss": 4.3}``.
    """

    step: int
    path: Path
    size_bytes: int
    modified: float
    is_latest: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def size_mb(self) -> float:
        return self.size_bytes / BYTES_PER_MB

    def as_dict(self) -> dict[str, Any]:
        """The form ``list_checkpoints()`` returns: step, path, size_mb, modified (ISO), is_latest, metrics."""
        return {"step": self.step, "path": str(self.path), "size_mb": self.size_mb,
                "modified": datetime.fromtimestamp(self.modified).isoformat(timespec="seconds"),
                "modified_ts": self.modified, "is_latest": self.is_latest, "metrics": dict(self.metrics)}


def read_manifest(checkpoints_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest's ``files`` mapping (name -> entry); empty when missing or unreadable."""
    doc, _ = rf.read_json(Path(checkpoints_dir) / rf.CHECKPOINT_MANIFEST)
    files = doc.get("files") if isinstance(doc, dict) else None
    return files if isinstance(files, dict) else {}


def latest_target(checkpoints_dir: str | os.PathLike[str]) -> str | None:
    """File name ``checkpoint_latest.pt`` points at (symlink or pointer file), or None."""
    link = Path(checkpoints_dir) / rf.CHECKPOINT_LATEST
    try:
        if link.is_symlink():
            return Path(os.readlink(link)).name
        if not link.is_file() or link.stat().st_size > POINTER_MAX_BYTES:
            return None
        data = link.read_bytes()
    except OSError:
        return None
    if not data.startswith(POINTER_MAGIC):
        return None
    name = data[len(POINTER_MAGIC):].decode("utf-8", "replace").strip()
    return Path(name).name or None


def scan_checkpoints(checkpoints_dir: str | os.PathLike[str]) -> list[CheckpointEntry]:
    """Checkpoint files in ``checkpoints_dir`` sorted by step; temporary and foreign files are ignored."""
    d = Path(checkpoints_dir)
    try:
        names = os.listdir(d)
    except OSError:
        return []
    latest = latest_target(d)
    manifest = read_manifest(d)
    out: list[CheckpointEntry] = []
    for name in names:
        step = rf.checkpoint_step(name)
        if step is None:
            continue
        try:
            st = os.stat(d / name)
        except OSError:
            continue
        entry = manifest.get(name)
        metrics = entry.get("metrics") if isinstance(entry, dict) else None
        out.append(CheckpointEntry(step, d / name, st.st_size, st.st_mtime, name == latest,
                                   dict(metrics) if isinstance(metrics, dict) else {}))
    out.sort(key=lambda e: (e.step, e.modified))
    return out


def plan_cleanup(entries: Sequence[CheckpointEntry], keep_last_n: int | None, just_written: str) -> list[Path]:
    """The files keep-last-N removes: all but the ``keep_last_n`` most recently written.

    The file just written is always kept (even when an older branch has higher steps), so a save can
    never delete its own result. ``keep_last_n`` None keeps everything.
    """
    if keep_last_n is None:
        return []
    others = [e for e in entries if e.path.name != just_written]
    others.sort(key=lambda e: (e.modified, e.step), reverse=True)
    keep_others = max(0, keep_last_n - 1)
    return [e.path for e in others[keep_others:]]


def load_order(entries: Sequence[CheckpointEntry], latest: str | None) -> list[CheckpointEntry]:
    """The order in which ``load_latest_checkpoint`` tries files: the latest pointer's target, then newest first."""
    rest = sorted(entries, key=lambda e: (e.modified, e.step), reverse=True)
    first = [e for e in rest if e.path.name == latest]
    return first + [e for e in rest if e.path.name != latest]


def file_crc32(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(size, crc32)`` of a file, read in chunks."""
    crc, size = 0, 0
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK_BYTES):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return size, crc


def verify_against_manifest(path: Path, entry: Mapping[str, Any] | None) -> str | None:
    """A problem in words when ``path`` matches none of its manifest versions; None when fine or unrecorded."""
    if not isinstance(entry, Mapping):
        return None
    versions = [v for v in entry.get("versions", []) if isinstance(v, Mapping)]
    if not versions:
        return None
    size_on_disk = path.stat().st_size
    if all(v.get("size") != size_on_disk for v in versions):
        expected = " or ".join(str(v.get("size")) for v in versions)
        return f"size is {size_on_disk} bytes, expected {expected} (truncated or overwritten)"
    size, crc = file_crc32(path)
    if not any(v.get("size") == size and v.get("crc32") == crc for v in versions):
        return "CRC-32 does not match the one recorded at save time (the file is corrupt)"
    return None


def validate_payload(obj: Any, expected_step: int | None) -> str | None:
    """A problem in words when a loaded object is not one of our checkpoints."""
    if not isinstance(obj, dict):
        return f"it holds a {type(obj).__name__}, not a checkpoint dictionary"
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        return f"it lacks {', '.join(missing)}"
    if expected_step is not None and obj.get("step") != expected_step:
        return f"it holds step {obj.get('step')!r} but its name says step {expected_step}"
    return None


def jsonable_config(config: Any) -> Any:
    """A configuration as plain JSON data (dataclasses, Namespaces and mappings accepted)."""
    if config is None:
        return None
    if is_dataclass(config) and not isinstance(config, type):
        config = asdict(config)
    elif hasattr(config, "to_dict") and callable(config.to_dict):
        config = config.to_dict()
    elif not isinstance(config, (Mapping, list, tuple, str, int, float, bool)) and hasattr(config, "__dict__"):
        config = vars(config)
    return rf.encode_value(config)


def error_summary(exc: BaseException) -> str:
    """The informative line of a load error (torch's weights-only errors put it deep in the text)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "Unsupported global" in ln or "WeightsUnpickler error" in ln:
            return ln[:300] + " (load with weights_only=False only if you trust the file)"
    return lines[0][:300] if lines else "no details"


def _tmp_pid(name: str) -> int | None:
    parts = name.rsplit(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


    return True


def remove_stale_temps(directory: Path, now: float | None = None) -> list[Path]:
    """Delete temporary files left by killed writers (their pid is dead, or they are old). Returns them."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(rf.TMP_PREFIX):
            continue
        p = directory / name
        pid = _tmp_pid(name)
        try:
            stale = (not rf.pid_alive(pid)) if pid is not None else now - p.lstat().st_mtime > STALE_TMP_SECONDS
            if stale:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed


# --------------------------------------------------------------------------- torch helpers

def _peel(model: Any) -> tuple[str, Any]:
    """(state-dict key prefix the wrappers add, innermost module) for DataParallel / DDP / ``torch.compile``
    wrappers, nested or not; ``("", model)`` for a plain module."""
    import torch

    wrappers = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    prefix = ""
    for _ in range(8):  # wrappers can nest (compile of DDP); a bound stops a pathological loop
        if isinstance(model, wrappers):
            prefix, model = prefix + "module.", model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            prefix, model = prefix + "_orig_mod.", model._orig_mod
        else:
            break
    return prefix, model


def unwrap_model(model: Any) -> Any:
    """The module inside DataParallel / DistributedDataParallel / ``torch.compile`` wrappers."""
    return _peel(model)[1]


def wrapper_prefix(model: Any) -> str:
    """The key prefix the wrappers around ``model`` add to its state dict (``"module."``, ``"_orig_mod."``,
    or both nested); ``""`` for a plain module."""
    return _peel(model)[0]


def _accept_unwrapped_keys(module: Any, state_dict: dict[str, Any], prefix: str, *_args: Any) -> None:
    """load_state_dict pre-hook on a wrapper: keys saved unwrapped (as CheckpointManager saves them) get the
    wrapper's prefix back, so ``wrapped.load_state_dict(checkpoint["model_state_dict"])`` works as the
    guide's multi-GPU example writes it. Keys that already carry the prefix are left alone."""
    full = prefix + wrapper_prefix(module)
    keys = [k for k in state_dict if k.startswith(prefix)]
    if full == prefix or not keys or any(k.startswith(full) for k in keys):
        return
    for k in keys:
        state_dict[full + k[len(prefix):]] = state_dict.pop(k)


def let_wrapper_load_unwrapped(model: Any) -> None:
    """Make a DataParallel / DDP / compiled wrapper accept the unwrapped state dict saved from it (once)."""
    if wrapper_prefix(model) and not getattr(model, "_trainboard_accepts_unwrapped", False):
        model.register_load_state_dict_pre_hook(_accept_unwrapped_keys)
        model._trainboard_accepts_unwrapped = True


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA random states, in a form ``torch.load(weights_only=True)`` accepts."""
    import torch

    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    np = sys.modules.get("numpy")
    if np is not None:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [str(kind), torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(cached)]
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
    except Exception:  # noqa: BLE001 - a broken CUDA setup must not stop a save
        pass
    return state


def restore_rng_state(state: Mapping[str, Any] | None) -> None:
    """Put back the random states saved by :func:`capture_rng_state` (missing parts are left alone)."""
    if not state:
        return
    import torch

    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _HashingWriter:
    """File-like object for ``torch.save`` that computes the CRC-32 of what it writes."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self.crc = 0
        self.size = 0
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            n = self._fh.write(data)
        except OSError as exc:
            # torch's writer turns our exception into "RuntimeError: unexpected pos"; keep the real cause
            self.error = exc
            raise
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        return n

    def flush(self) -> None:
        self._fh.flush()




def _tmp_name(target: str) -> str:
    return f"{rf.TMP_PREFIX}{target}.{os.getpid()}.{secrets.token_hex(4)}"


# --------------------------------------------------------------------------- the manager

class CheckpointManager:
    """Saves, lists, cleans up and loads the checkpoints of one experiment directory.

    Args:
        experiment_dir: the experiment (run) directory; checkpoints go to ``<dir>/checkpoints/``.
        save_interval: ``should_checkpoint(step)`` is true every this many steps (default 1000).
        keep_last_n: checkpoints kept after each save, the newest ones (default 3); None keeps all.
            The checkpoint just written is never deleted.
        main_process: save from this process; default None means "world rank is 0", so a DDP training
            can call ``save_checkpoint`` on every rank.

    Raises:
        ValueError: when ``save_interval`` or ``keep_last_n`` is not a positive integer, or
            ``experiment_dir`` is empty or a file.

    Example:
        >>> mgr = CheckpointManager("experiments/exp1", save_interval=500)   # doctest: +SKIP
        >>> ckpt = mgr.load_latest_checkpoint()
        >>> start = mgr.restore(ckpt, model, optimizer) if ckpt else 0
        >>> for step in range(start, num_steps):
        ...     loss = train_step()
        ...     if mgr.should_checkpoint(step):
        ...         mgr.save_checkpoint(step, model, optimizer, loss_history, config)
    """

    def __init__(self, experiment_dir: str | os.PathLike[str], save_interval: int = DEFAULT_SAVE_INTERVAL,
                 keep_last_n: int | None = DEFAULT_KEEP_LAST_N, *, main_process: bool | None = None) -> None:
        if experiment_dir is None or not str(experiment_dir).strip():
            raise ValueError("CheckpointManager(experiment_dir=...) needs a directory path; got an empty value")
        if not isinstance(save_interval, int) or isinstance(save_interval, bool) or save_interval < 1:
            raise ValueError(f"CheckpointManager(save_interval=...) must be a positive integer; got {save_interval!r}")
        if keep_last_n is not None and (not isinstance(keep_last_n, int) or isinstance(keep_last_n, bool)
                                        or keep_last_n < 1):
            raise ValueError(f"CheckpointManager(keep_last_n=...) must be a positive integer or None (keep all); "
                             f"got {keep_last_n!r}")
        self.paths = rf.RunPaths.of(Path(experiment_dir).expanduser())
        if self.paths.root.exists() and not self.paths.root.is_dir():
            raise ValueError(f"CheckpointManager experiment_dir {str(self.paths.root)!r} is not a directory")
        self.checkpoint_dir = self.paths.checkpoints_dir
        self.save_interval = save_interval
        self.keep_last_n = keep_last_n
        self.is_main = is_main_process(main_process)
        self.guard = Guard(logger)
        self.failed_saves = 0
        self.last_error: str | None = None
        self.last_saved: Path | None = None
        if self.is_main:
            try:
                self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
                remove_stale_temps(self.checkpoint_dir)
            except OSError as exc:
                self.guard.warn_once("checkpoint directory", f"cannot create {self.checkpoint_dir}: {exc}")

    # ----------------------------------------------------------------- saving
    def should_checkpoint(self, step: int) -> bool:
        """True every ``save_interval`` steps (never at step 0, which has nothing to save)."""
        return step > 0 and step % self.save_interval == 0

    def save_checkpoint(self, step: int, model: Any, optimizer: Any = None, loss_history: Iterable[Any] | None = None,
                        config: Any = None, *, scheduler: Any = None, metrics: Mapping[str, Any] | None = None,
                        extra: Mapping[str, Any] | None = None) -> Path | None:
        """Write the checkpoint of ``step`` atomically; return its path, or None when it could not be saved.

        The checkpoint holds ``step``, ``model_state_dict`` (unwrapped from DataParallel/DDP; the wrapper
        itself is taught to load those keys, so ``model.load_state_dict(...)`` works on it as well),
        ``optimizer_state_dict``, ``scheduler_state_dict``, ``loss_history``, ``config``, ``metrics``,
        ``rng_state`` (Python, NumPy, torch, CUDA) and ``extra`` (your data-loader position, for instance).
        A full disk or any other failure is reported once as a warning and the training goes on; no
        partial file is left behind.

        Raises:
            ValueError: when ``step`` is not a non-negative integer (a mistake in the calling code).
        """
        step = as_number(step)
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"save_checkpoint(step=...) must be a non-negative integer; got {step!r}")
        if not self.is_main:
            return None
        name = rf.checkpoint_name(step)
        try:
            let_wrapper_load_unwrapped(model)
            payload = self._payload(step, model, optimizer, loss_history, config, scheduler, metrics, extra)
            final = self._write_atomic(name, payload, metrics)
        except Exception as exc:  # noqa: BLE001 - a checkpoint failure must never stop the training
            self._report_failure(name, exc)
            return None
        self.last_saved = final
        self.guard.run("checkpoint_latest.pt update", self._point_latest, name)
        self.guard.run("checkpoint cleanup", self._cleanup, name)
        return final

    def _payload(self, step: int, model: Any, optimizer: Any, loss_history: Iterable[Any] | None, config: Any,
                 scheduler: Any, metrics: Mapping[str, Any] | None, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        import torch

        return {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "step": step,
            "model_state_dict": unwrap_model(model).state_dict(),
            "optimizer_state_dict": optimizer.state_dict() if optimizer is not None else None,
            "scheduler_state_dict": scheduler.state_dict() if scheduler is not None else None,
            "loss_history": [as_number(x) for x in (loss_history or [])],
            "config": jsonable_config(config),
            "metrics": rf.encode_value(dict(metrics or {})),
            "rng_state": capture_rng_state(),
            "extra": dict(extra) if extra else {},
            "saved_at": time.time(),
            "torch_version": str(torch.__version__),
        }

    def _write_atomic(self, name: str, payload: Mapping[str, Any], metrics: Mapping[str, Any] | None) -> Path:
        import torch

        d = self.checkpoint_dir
        d.mkdir(parents=True, exist_ok=True)
        final = d / name
        tmp = d / _tmp_name(name)
        writer: _HashingWriter | None = None
        try:
            with open(tmp, "xb") as fh:
                writer = _HashingWriter(fh)
                try:
                    torch.save(payload, writer)
                except Exception as exc:
                    if writer.error is not None and writer.error is not exc:
                        raise writer.error from exc
                    raise
                fh.flush()
                os.fsync(fh.fileno())
            version = {"size": writer.size, "crc32": writer.crc}
            # Record the new version next to the current one before the rename and drop the old one
            # after it: whichever file a kill leaves under this name, the manifest vouches for it.
            self._update_manifest(name, version, metrics, keep_previous=True)
            os.replace(tmp, final)
        except BaseException:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
        rf.fsync_path(d)
        self.guard.run("checkpoint manifest", self._update_manifest, name, version, metrics, keep_previous=False)
        return final

    def _update_manifest(self, name: str, version: dict[str, int], metrics: Mapping[str, Any] | None, *,
                         keep_previous: bool, drop: Iterable[str] = ()) -> None:
        doc, _ = rf.read_json(self.paths.checkpoint_manifest)
        files = doc.get("files") if isinstance(doc, dict) and isinstance(doc.get("files"), dict) else {}
        for gone in drop:
            files.pop(gone, None)
        old = files.get(name) if isinstance(files.get(name), dict) else {}
        versions = [version]
        if keep_previous:
            versions += [v for v in old.get("versions", []) if v != version][: MANIFEST_VERSIONS_KEPT - 1]
        files[name] = {"step": rf.checkpoint_step(name), "versions": versions, "saved_at": time.time(),
                       "metrics": rf.encode_value(dict(metrics or {}))}
        rf.write_json_atomic(self.paths.checkpoint_manifest, {"v": rf.SCHEMA_VERSION, "files": files}, fsync=True)

    def _point_latest(self, name: str) -> None:
        link = self.paths.checkpoint_latest
        tmp = self.checkpoint_dir / _tmp_name(rf.CHECKPOINT_LATEST)
        try:
            os.symlink(name, tmp)
        except (OSError, NotImplementedError):
            with open(tmp, "wb") as fh:  # filesystems without symlinks get a pointer file
                fh.write(POINTER_MAGIC + name.encode("utf-8"))
        try:
            os.replace(tmp, link)
        except BaseException:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise

    def _cleanup(self, just_written: str) -> None:
        doomed = plan_cleanup(scan_checkpoints(self.checkpoint_dir), self.keep_last_n, just_written)
        if not doomed:
            return
        doc, _ = rf.read_json(self.paths.checkpoint_manifest)
        files = doc.get("files") if isinstance(doc, dict) and isinstance(doc.get("files"), dict) else {}
        for p in doomed:
            files.pop(p.name, None)
        rf.write_json_atomic(self.paths.checkpoint_manifest, {"v": rf.SCHEMA_VERSION, "files": files}, fsync=True)
        for p in doomed:
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def _report_failure(self, name: str, exc: BaseException) -> None:
        self.failed_saves += 1
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            kind = "checkpoint save: disk full"
            msg = f"disk full while saving {name} in {self.checkpoint_dir}; checkpoint skipped"
        else:
            kind = f"checkpoint save: {type(exc).__name__}"
            msg = f"could not save {name} in {self.checkpoint_dir}: {type(exc).__name__}: {exc}; checkpoint skipped"
        self.last_error = msg
        self.guard.warn_once(kind, msg)

    # ----------------------------------------------------------------- listing and loading
    def list_checkpoints(self) -> list[dict[str, Any]]:
        """Every checkpoint on disk, oldest step first: ``step``, ``path``, ``size_mb``, ``modified`` (ISO), ``is_latest``."""
        return [e.as_dict() for e in scan_checkpoints(self.checkpoint_dir)]

    def load_checkpoint(self, step: int, map_location: Any = "cpu", *, weights_only: bool = True) -> dict[str, Any] | None:
        """The verified checkpoint of ``step``, or None (with a warning) when it is missing or damaged.

        Args:
            step: the step to load.
            map_location: passed to ``torch.load`` (default ``"cpu"``).
            weights_only: passed to ``torch.load`` (default True: no arbitrary code runs on load).
        """
        path = self.paths.checkpoint(step)
        if not path.exists():
            logger.warning("Trainboard: no checkpoint for step %s (%s does not exist)", step, path)
            return None
        ckpt, problem = self._load_verified(path, map_location, weights_only)
        if problem:
            logger.warning("Trainboard: failed to load checkpoint from %s: %s", path.name, problem)
        return ckpt

    def load_latest_checkpoint(self, map_location: Any = "cpu", *, weights_only: bool = True) -> dict[str, Any] | None:
        """The newest checkpoint that loads and verifies; older ones are tried when it is damaged.

        Each damaged file is named in a warning. Returns None when there is no usable checkpoint.
        """
        entries = scan_checkpoints(self.checkpoint_dir)
        latest = latest_target(self.checkpoint_dir)
        order = load_order(entries, latest)
        for i, entry in enumerate(order):
            ckpt, problem = self._load_verified(entry.path, map_location, weights_only)
            if problem is None:
                return ckpt
            label = f"{rf.CHECKPOINT_LATEST} -> {entry.path.name}" if entry.path.name == latest else entry.path.name
            nxt = f"trying {order[i + 1].path.name}" if i + 1 < len(order) else "no older checkpoint left"
            logger.warning("Trainboard: failed to load checkpoint from %s: %s; %s", label, problem, nxt)
        return None

    def _load_verified(self, path: Path, map_location: Any, weights_only: bool) -> tuple[dict[str, Any] | None, str | None]:
        import torch

        try:
            problem = verify_against_manifest(path, read_manifest(self.checkpoint_dir).get(path.name))
            if problem:
                return None, problem
            obj = torch.load(path, map_location=map_location, weights_only=weights_only)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a damaged checkpoint
            return None, f"{type(exc).__name__}: {error_summary(exc)}"
        problem = validate_payload(obj, rf.checkpoint_step(path.name))
        return (None, problem) if problem else (obj, None)

    # ----------------------------------------------------------------- resuming
    @staticmethod
    def restore(checkpoint: Mapping[str, Any], model: Any, optimizer: Any = None, scheduler: Any = None, *,
                restore_rng: bool = True) -> int:
        """Load a checkpoint into the model (wrapped or not), optimizer and scheduler; return the next step.

        With ``restore_rng`` (default) the random states of the save are restored too, so dropout and
        shuffling continue exactly as in an uninterrupted run.
        """
        unwrap_model(model).load_state_dict(checkpoint["model_state_dict"])
        if optimizer is not None and checkpoint.get("optimizer_state_dict") is not None:
            optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
        if scheduler is not None and checkpoint.get("scheduler_state_dict") is not None:
            scheduler.load_state_dict(checkpoint["scheduler_state_dict"])
        if restore_rng:
            restore_rng_state(checkpoint.get("rng_state"))
        return int(checkpoint["step"]) + 1
