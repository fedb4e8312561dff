"""The one exception type the CLI turns into a one-line message, and the checks every command shares."""

from __future__ import annotations

import os
from pathlib import Path


class TessvrtError(Exception):
    """A problem the user can fix; the message names it and the fix."""


class MissingObject(TessvrtError):
    """An object is gone (404) or forbidden (403): not worth retrying."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def check_output_folder(folder: Path, option: str) -> None:
    """Fail before any work if the output's folder is missing or read-only (option: how to pick another)."""
    if not folder.is_dir():
        raise TessvrtError(f"output folder {folder} does not exist; create it or choose another {option}")
    if not os.access(folder, os.W_OK):
        raise TessvrtError(f"output folder {folder} is not writable; choose another {option}")


NAME_MAX = 255  # bytes in one file name on Linux and macOS file systems


def check_name(target: Path, longest: int, option: str) -> None:
    """Refuse an output name that the files derived from it (temporaries, per-zone names) would make too long,
    or that holds control characters (they would end up inside VRT XML)."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in str(target)):
        raise TessvrtError(f"output {str(target)!r} contains control characters; choose another {option}")
    if longest > NAME_MAX:
        raise TessvrtError(f"output name {target.name[:40]}... is too long ({len(target.name)} characters; "
                           f"files made from it would exceed {NAME_MAX}); choose a shorter {option}")


def human_bytes(n: float) -> str:
    """A size as people read it (decimal units): '1.6 GB' from 1 GB up, '340.2 MB' below it, then kB and bytes,
    so a small size never reads '0.0 GB'. Each unit takes over where the smaller one would round to 1,000."""
    n = max(float(n), 0.0)
    if n >= 999.95e6:
        return f"{n / 1e9:,.1f} GB"
    if n >= 999.5e3:
        return f"{n / 1e6:,.1f} MB"
    if n >= 999.5:
        return f"{n / 1e3:,.0f} kB"
    return f"{n:.0f} bytes"
