"""Atomic file writes and provenance records shared by every stage that writes files.

Every stage output is a plain file written atomically: the bytes go to a temporary file in the same
folder, are flushed to disk, and are renamed over the target in one step, so a reader never sees half a
file and a killed process never leaves a truncated one behind.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npy",
    "read_json",
    "to_jsonable",
    "git_commit",
    "provenance",
    "check_can_write",
]


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (``os.umask`` can only be read by
    setting it, which for a moment affects files other threads create)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + ``os.replace``), with the mode a
    plain ``open(path, "w")`` gives (``0o666`` less the umask), not the temporary file's ``0o600``.

    Raises:
        IsADirectoryError: ``path`` is a folder (the message names it).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name (e.g. {path / 'out.json'})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_save_npy(path: str | os.PathLike, arr: np.ndarray) -> Path:
    """Save ``arr`` in ``.npy`` format to ``path`` atomically (no pickles)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def to_jsonable(obj: Any, *, name: str | None = None) -> Any:
    """``obj`` as plain JSON values: numpy scalars/arrays, tuples and paths converted (a JSON round trip).

    A value JSON cannot hold raises ``TypeError``; with ``name`` given, ``ValueError("<name> is not JSON
    serialisable: ...")`` instead, for public functions validating their arguments.
    """
    try:
        return json.loads(json.dumps(obj, default=_json_default))
    except TypeError as e:
        if name is None:
            raise
        raise ValueError(f"{name} is not JSON serialisable: {e}") from e


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the file in the error if it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON (corrupt or truncated?): {e}") from e


def check_can_write(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Refuse to replace an existing output unless ``overwrite`` is set (nothing is silently lost)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name (e.g. {path / 'out.json'})")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    return path


def git_commit() -> str | None:
    """The commit of the uslkit checkout this code runs from, ``None`` when not in a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit or None


def provenance() -> dict[str, Any]:
    """Fields every written artefact records: uslkit version, git commit, creation time (UTC, ISO 8601)."""
    return {
        "uslkit_version": __version__,
        "git_commit": git_commit(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.generic):  # np.bool_ and the other scalar types
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
