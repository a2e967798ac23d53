"""Device choice: CUDA (and faiss-GPU) when present, CPU otherwise. Nothing is read at import time."""

from __future__ import annotations

__all__ = ["resolve_device", "faiss_gpu_count", "faiss_use_gpu"]


def resolve_device(device: str | None = None):
    """Return a ``torch.device``: ``None``/``"auto"`` picks CUDA when available, else CPU.

    Raises ``ValueError`` when CUDA is requested explicitly but is not available.
    """
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available on this machine")
    return dev


def faiss_gpu_count() -> int:
    """Number of GPUs faiss can use (0 with faiss-cpu or without a GPU)."""
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get is not None else 0
    except Exception:  # pragma: no cover - broken GPU drivers
        return 0


def faiss_use_gpu(device=None) -> bool:
    """Whether faiss should run on the GPU: ``None``/``"auto"`` -> when available; ``"cpu"`` -> no;
    ``"cuda"``/``"cuda:N"``/``"gpu"`` -> yes, or ``ValueError`` when faiss has no GPU."""
    if device is None or device == "auto":
        return faiss_gpu_count() > 0
    name = str(device)
    if name == "cpu":
        return False
    if name in ("cuda", "gpu") or name.startswith("cuda:"):
        if faiss_gpu_count() == 0:
            raise ValueError(f"device {device!r} was requested but faiss has no GPU (faiss-cpu or no CUDA)")
        return True
    raise ValueError(f"device must be None, 'auto', 'cpu', 'cuda' or 'gpu', got {device!r}")
