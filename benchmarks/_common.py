"""Helpers shared by the benchmark scripts: the machine record kept with every result and the rewrite of one
section of ``benchmarks/RESULTS.md``. The scripts run as ``python benchmarks/<script>.py``, so this folder is
on ``sys.path`` and they import it as ``_common``."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

import numpy as np


def machine() -> dict:
    """CPU model, cores, memory, library versions, CUDA, load average and date, recorded with every result.

    Optional libraries that are not installed (faiss, scikit-learn, scikit-activeml) are recorded as ``None``.
    """
    import torch

    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu, "cpu_count": os.cpu_count(), "mem_gb": round(mem_gb, 1), "platform": platform.platform(),
        "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
        "faiss": _version("faiss"), "sklearn": _version("sklearn"), "scikit_activeml": _version("skactiveml"),
        "cuda": torch.cuda.is_available(), "loadavg_at_start": list(os.getloadavg()),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def update_section(md_path: Path, heading: str, body: str) -> None:
    """Replace (or append) the ``## heading`` section of ``md_path``, leaving every other section alone;
    ``###`` subsections belong to the section. Written atomically."""
    from uslkit import _io

    text = md_path.read_text(encoding="utf-8") if md_path.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == f"## {heading}"), None)
    new = [f"## {heading}", "", *body.rstrip("\n").splitlines(), ""]
    if start is None:
        lines = [*lines, "", *new] if lines and lines[-1].strip() else [*lines, *new]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines = lines[:start] + new + lines[end:]
    _io.atomic_write_text(md_path, "\n".join(lines).rstrip("\n") + "\n")
