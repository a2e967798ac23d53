"""The round's classifier by fine-tuning a pretrained encoder on the labelled images, instead of the head on
frozen embeddings (issue 15's option; paper 003, Sec. 5, names fine-tuning as the stronger learner once labels
grow). Each round runs the training core's :func:`uslkit.train.finetune` (SimCLRv2-CLD's linear protocol by
default, ``mode="full"`` for every weight) on the labels so far, then passes the pool's images through the
result once: its features and logits are what the strategies see.

The strategies keep reading the frozen embeddings as ``f_self`` (K-means, TypiClust, ProbCover, the NTK's
input); only the classifier's outputs (probabilities, penultimate features, BADGE's gradients) come from the
fine-tuned network.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

__all__ = ["FinetuneClassifier", "FinetunedModel"]


class FinetunedModel:
    """A fine-tuned network's outputs on the pool, with the :class:`uslkit.active.Head` methods strategies use.

    The methods take the pool embeddings (as a :class:`Head` does) only to check they are the whole pool: a
    fine-tuned network answers for the pool's images, computed once. ``config.hidden`` is the feature width.

    Attributes:
        features: ``(n, h)`` float32 penultimate features of the pool's images. logits: ``(n, C)`` float32.
        test_acc: top-1 on the classifier's test set, or ``None``.
    """

    def __init__(self, features: np.ndarray, logits: np.ndarray, test_acc: float | None):
        self._features = np.asarray(features, dtype=np.float32)
        self._logits = np.asarray(logits, dtype=np.float32)
        self.test_acc = test_acc
        self.config = SimpleNamespace(hidden=int(self._features.shape[1]), kind="finetune")

    def _pool(self, emb) -> None:
        if np.shape(emb)[0] != self._logits.shape[0]:
            raise ValueError(f"a fine-tuned classifier answers for its whole pool of {self._logits.shape[0]} images, "
                             f"not for {np.shape(emb)[0]} embeddings")

    def logits(self, emb) -> np.ndarray:
        self._pool(emb)
        return self._logits

    def probs(self, emb) -> np.ndarray:
        self._pool(emb)
        z = self._logits.astype(np.float64) - self._logits.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    def features(self, emb) -> np.ndarray:
        self._pool(emb)
        return self._features

    def grad_factors(self, emb) -> tuple[np.ndarray, np.ndarray]:
        """BADGE's factors for the linear head on the features: ``(p - onehot(argmax p), features)``."""
        a = self.probs(emb)
        a[np.arange(len(a)), a.argmax(1)] -= 1.0
        return a, self._features.astype(np.float64)


class FinetuneClassifier:
    """Fine-tune ``init`` on each round's labelled images (:func:`uslkit.train.finetune`).

    Args:
        init: a kit checkpoint (e.g. SimCLR's ``model.pt``) or a :class:`uslkit.train.models.Net`.
        train_set: the pool's images (:class:`uslkit.data.ImageDataset`, the same samples as the embeddings).
        test_set: images each round is scored on (top-1 of the fine-tuned network), optional.
        config / preset / params: :class:`uslkit.train.config.FinetuneConfig` (default: the linear protocol; e.g.
            ``mode="full"``, ``epochs=``, ``samples_per_epoch=``).
        batch_size, device: for passing the pool through the network.
        progress: a progress bar for each round's fine-tuning and pass over the pool (a round takes minutes).
    """

    def __init__(self, init, train_set, *, test_set=None, config=None, preset: str | None = None,
                 batch_size: int = 512, device=None, progress: bool = False, **params):
        from ..train.config import FinetuneConfig, resolve_config

        self.config = resolve_config(FinetuneConfig, config, preset, params)
        self.init, self.train_set, self.test_set = init, train_set, test_set
        self.batch_size, self.device, self.progress = batch_size, device, bool(progress)

    def run_params(self) -> dict:
        """What a run records of its classifier (a changed value is another run)."""
        import hashlib
        import os

        from ..train.semi import file_digest

        if isinstance(self.init, (str, os.PathLike)):
            init = file_digest(self.init)
        else:  # a network: its architecture and a digest of its weights
            h = hashlib.sha256()
            for t in self.init.state_dict().values():
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
            init = {"arch": getattr(self.init, "arch", None), "weights": h.hexdigest()[:16]}
        return {"kind": "finetune", **self.config.run_params(), "init": init,
                "dataset": getattr(self.train_set, "name", None), "n": len(self.train_set),
                "test": None if self.test_set is None else [getattr(self.test_set, "name", None), len(self.test_set)]}

    def fit(self, labeled, labels, *, seed: int) -> FinetunedModel:
        """Fine-tune on ``(labeled, labels)`` with ``seed``; the pool's features and logits, and the test top-1."""
        import dataclasses

        import torch

        from ..evaluate.networks import extract_features
        from ..labels import Selection, make_selection
        from ..train import finetune

        ds = self.train_set
        sel = make_selection(np.asarray(labeled, dtype=np.int64), dataset=ds, method="active", seed=seed)
        sel = Selection.from_dict(dataclasses.asdict(dataclasses.replace(
            sel, labels=[int(v) for v in labels], class_names=list(getattr(ds, "class_names", []) or []))))
        res = finetune(self.init, ds, sel, self.config, test_set=self.test_set, seed=seed, progress=self.progress,
                       device=self.device)
        net = res.net
        feats = extract_features(net, ds, batch_size=self.batch_size, progress=self.progress)
        was = net.training
        net.eval()
        with torch.no_grad():
            dev = next(net.parameters()).device
            logits = net.head(torch.from_numpy(feats).to(dev)).float().cpu().numpy()
        net.train(was)
        acc = None if self.test_set is None else float(res.metrics["top1"])
        return FinetunedModel(feats, logits, acc)
