"""A network over a dataset: features, logits and test accuracy, with the deterministic test transform.

The only module of :mod:`uslkit.evaluate` that imports torch; the package loads it on first use.
"""

from __future__ import annotations

import numpy as np
import torch

from .._validate import check_positive_int
from ..device import resolve_device
from ..train.augment import image_kind, normalize, test_transform, to_uint8_tensor
from ..train.batches import images_as_tensor
from .metrics import classification_metrics

__all__ = ["evaluate_classifier", "extract_features", "predict"]


def extract_features(net, dataset, *, kind=None, batch_size=512, device=None, progress=False) -> np.ndarray:
    """``net.features`` of every sample of ``dataset`` (test transform, eval mode), float32 ``(N, feat_dim)``.

    ``kind``: the image kind of :mod:`uslkit.train.augment` (default: from the dataset); ``device``: default
    the network's.
    """
    return _run(net.features, net, dataset, kind=kind, batch_size=batch_size, device=device, progress=progress,
                desc="features")


def predict(net, dataset, *, kind=None, batch_size=512, device=None, progress=False) -> np.ndarray:
    """Logits of ``net`` for every sample of ``dataset``, float32 ``(N, num_classes)``; arguments as
    :func:`extract_features`."""
    return _run(net, net, dataset, kind=kind, batch_size=batch_size, device=device, progress=progress,
                desc="predict")


def evaluate_classifier(net, test_set, *, ema=None, kind=None, batch_size=512, device=None) -> dict:
    """:func:`uslkit.evaluate.classification_metrics` of ``net`` on ``test_set`` (keys ``top1``, ``per_class``,
    ``mean_per_class``) and of its EMA (the same keys prefixed ``ema_``) when given."""
    out = {}
    for prefix, model in (("", net), ("ema_", ema)):
        if model is None:
            continue
        logits = predict(model, test_set, kind=kind, batch_size=batch_size, device=device)
        m = classification_metrics(logits.argmax(1), test_set.labels, test_set.num_classes)
        out.update({prefix + k: v for k, v in m.items()})
    return out


def _batches(dataset, kind, batch_size):
    tf = test_transform(kind)
    images = images_as_tensor(dataset)
    n = len(dataset)
    for s in range(0, n, batch_size):
        idx = range(s, min(n, s + batch_size))
        if images is not None and kind != "imagenet":  # the test transform is normalisation alone: batch it
            yield normalize(images[s : s + batch_size], kind)
        elif images is not None:
            yield torch.stack([tf(images[i]) for i in idx])
        else:
            yield torch.stack([tf(to_uint8_tensor(dataset.get_image(i))) for i in idx])


@torch.no_grad()
def _run(fn, net, dataset, *, kind, batch_size, device, progress, desc):
    kind = kind or image_kind(dataset)
    batch_size = check_positive_int(batch_size, name="batch_size")
    dev = resolve_device(device) if device is not None else next(net.parameters()).device
    was = net.training
    net.eval().to(dev)
    outs = []
    it = _batches(dataset, kind, batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=-(-len(dataset) // batch_size), desc=desc, unit="batch", leave=False)
    for x in it:
        outs.append(fn(x.to(dev)).float().cpu())
    net.train(was)
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), dtype=np.float32)
