"""How outputs appear: whole or not at all, never over what tessvrt did not make, one writer at a time.

Every command writes hidden temporaries named after the target and its pid beside the target,
then renames them into place together (`publish`): the old files stay until every new one is
complete, and a failure half-way puts the old ones back. A temporary whose pid is no longer
running (SIGKILL, power loss) is removed by the next run for the same target (`clean_stale`);
a lock file per target stops two runs writing it at once (`TargetLock`).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TessvrtError

TMP_MARK = ".tessvrt-tmp"


def tmp_path(target: Path, suffix: str = "") -> Path:
    """The hidden temporary of this process for a target: .<name>.<pid>.tessvrt-tmp<suffix>."""
    return target.with_name(f".{target.name}.{os.getpid()}{TMP_MARK}{suffix}")


def alive(pid: int) -> bool:
    """Whether another process with this pid runs (a zombie, killed but not yet reaped, does not)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return True


def clean_stale(parent: Path, targets: list[Path]) -> None:
    """Remove temporaries that runs no longer alive left beside these targets (a rerun restarts cleanly).

    Names are matched literally (an output named `*.tif` must not match another run's files).
    """
    for t in targets:
        for p in parent.glob(f".{glob.escape(t.name)}.*{TMP_MARK}*"):
            m = re.match(re.escape(f".{t.name}.") + r"(\d+)" + re.escape(TMP_MARK), p.name)
            if not m or alive(int(m.group(1))):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


@dataclass
class TargetLock:
    """An exclusive claim on output paths for the life of a `with` block (lock files hold the pid)."""

    targets: list[Path]
    _held: list[Path] = field(default_factory=list)

    def __enter__(self) -> TargetLock:
        try:
            for t in self.targets:
                self._claim(t.with_name(f".{t.name}.lock{TMP_MARK}"), t, self._held)
        except BaseException:
            self.__exit__()
            raise
        return self

    @staticmethod
    def _claim(lock: Path, target: Path, held: list[Path]) -> None:
        """Make lock holding our pid and add it to held. A signal is handled as soon as a call returns, so a
        Ctrl-C/SIGTERM during os.open or the write surfaces inside these try blocks: the file made is removed."""
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and alive(pid):
                    raise TessvrtError(f"another tessvrt run (pid {pid}) is writing {target}; wait for it to finish "
                                       "or choose another output") from None
                lock.unlink(missing_ok=True)  # left by a run that is gone
                continue
            except BaseException:  # KeyboardInterrupt (SIGTERM too), or start-up's SystemExit
                _remove_unwritten(lock)
                raise
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(str(os.getpid()))  # written on close: ENOSPC shows there
                held.append(lock)  # from here __exit__ removes it
            except OSError as exc:
                lock.unlink(missing_ok=True)  # an empty lock would read as "no pid": never left behind
                raise TessvrtError(f"cannot write the lock file {lock} ({exc.strerror or exc}); free disk space in "
                                   f"{lock.parent} or choose another output") from None
            except BaseException:
                if lock not in held:
                    lock.unlink(missing_ok=True)
                raise
            return
        raise TessvrtError(f"cannot lock {target} (lock file {lock} keeps reappearing); choose another output")

    def __exit__(self, *exc: object) -> None:
        for lock in self._held:
            lock.unlink(missing_ok=True)
        self._held.clear()


def _remove_unwritten(lock: Path) -> None:
    """The lock an interrupted os.open may have made: empty, or ours (another run's holds its own pid)."""
    try:
        text = lock.read_text().strip()
    except OSError:
        return
    if text in ("", str(os.getpid())):
        lock.unlink(missing_ok=True)


def publish(moves: list[tuple[Path, Path]], trash: Path) -> None:
    """Rename each finished temporary onto its target, all or none.

    Existing targets are first moved into `trash` (a folder the caller deletes afterwards); if a
    rename fails half-way, the new files are taken out again and the old ones put back.
    """
    done: list[tuple[Path, Path, Path | None]] = []  # (new, target, old copy in trash)
    try:
        for k, (new, target) in enumerate(moves):
            old = None
            if target.exists() or target.is_symlink():
                old = trash / f"{k}.{target.name}"
                os.replace(target, old)
            done.append((new, target, old))
            os.replace(new, target)
    except BaseException:
        for new, target, old in reversed(done):
            if target.exists() and not new.exists():
                os.replace(target, new)
            if old is not None:
                os.replace(old, target)
        raise
