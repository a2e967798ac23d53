"""The classifier of the active-learning rounds: a small head trained on frozen embeddings.

Paper 003 (NTKCPL, Sec. 4 and appendix 6.3) and the low-budget AL paper train only a head on top of a frozen
self-supervised encoder; the head's outputs are what uncertainty strategies score, its penultimate features
are NTKCPL's "active learning feature" and core-set's ``al`` space, and its last layer gives BADGE's gradient
embeddings. Training runs on one CPU thread (whatever the machine has) so the same labelled set and seed give
the same weights bit for bit on any thread count.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .._validate import check_positive_int, check_seed
from ..embed import l2_normalize
from ..train.config import LearnerConfig, resolve_config

__all__ = ["HeadConfig", "Head", "train_head", "head_config", "one_thread"]


@dataclass(frozen=True)
class HeadConfig(LearnerConfig):
    """The head trained at every round on the labelled embeddings (L2-normalised first).

    ``kind="mlp"`` is ``Linear(d, hidden) + BatchNorm1d + ReLU + Linear(hidden, C)`` (paper 003, appendix 6.3);
    ``kind="linear"`` one ``Linear(d, C)``. Cross-entropy, mini-batches of ``batch_size`` shuffled per epoch,
    ``epochs`` epochs; the learning rate drops x0.1 at each of ``milestones`` (epochs; empty: constant).

    Presets: ``"ntkcpl"`` (the default values: paper 003 Table 3, CIFAR-10 row: MLP64, SGD lr 0.3, momentum
    0.9, weight decay 3e-4, batch 100, 100 epochs; the paper names no schedule, so the rate is constant) and
    ``"linear"`` (the low-budget AL paper's probe as :func:`uslkit.evaluate.al_linear_probe`: Adam 0.01,
    x0.1 at epochs 50 and 75, batch 128).

    Deviation: both papers pass cropped and flipped images through the frozen backbone at every epoch; the
    kit trains on fixed embeddings (one forward pass of the encoder for the whole study).
    """

    LEARNER: ClassVar[str] = "head"

    kind: str = "mlp"
    hidden: int = 64
    optimizer: str = "sgd"
    lr: float = 0.3
    momentum: float = 0.9
    weight_decay: float = 3e-4
    batch_size: int = 100
    epochs: int = 100
    milestones: tuple = ()

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "linear"):
            raise ValueError(f"head kind must be 'mlp' or 'linear', got {self.kind!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"head optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        for name in ("hidden", "batch_size", "epochs"):
            check_positive_int(getattr(self, name), name=f"head {name}")
        if not (self.lr > 0 and self.momentum >= 0 and self.weight_decay >= 0):
            raise ValueError(f"head lr must be > 0 and momentum, weight_decay >= 0, got lr={self.lr}, "
                             f"momentum={self.momentum}, weight_decay={self.weight_decay}")
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))


HeadConfig.PRESETS = {
    "ntkcpl": HeadConfig(),
    "linear": HeadConfig(kind="linear", optimizer="adam", lr=0.01, momentum=0.0, weight_decay=0.0, batch_size=128,
                         milestones=(50, 75)),
}


@contextlib.contextmanager
def one_thread():
    """Run torch on one CPU thread inside the block (same bits on any machine), then restore the count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Head:
    """A trained head: ``probs``, penultimate ``features`` and BADGE ``grad_embedding`` of any embeddings."""

    def __init__(self, net, config: HeadConfig, num_classes: int):
        self.net = net.eval()
        self.config = config
        self.num_classes = num_classes

    def _forward(self, emb, chunk: int = 65536):
        import torch

        x = l2_normalize(emb)
        feats, logits = [], []
        with one_thread(), torch.no_grad():
            for s in range(0, x.shape[0], chunk):
                xb = torch.from_numpy(x[s:s + chunk])
                h = self.net[:-1](xb) if self.config.kind == "mlp" else xb
                feats.append(h.numpy())
                logits.append(self.net[-1](h).numpy())
        return np.concatenate(feats), np.concatenate(logits)

    def logits(self, emb) -> np.ndarray:
        """``(n, C)`` float32 outputs before the softmax."""
        return self._forward(emb)[1]

    def probs(self, emb) -> np.ndarray:
        """``(n, C)`` float64 softmax probabilities."""
        z = self.logits(emb).astype(np.float64)
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    def features(self, emb) -> np.ndarray:
        """``(n, h)``: the input of the last layer (the MLP's hidden ReLU output; the normalised embedding for
        a linear head), NTKCPL's active-learning feature ``f_al``."""
        return self._forward(emb)[0]

    def grad_factors(self, emb) -> tuple[np.ndarray, np.ndarray]:
        """``(a (n, C), h (n, h))`` float64 with :meth:`grad_embedding` ``= a outer h``: ``a = p - onehot(argmax
        p)``, ``h`` the last layer's input."""
        h, z = self._forward(emb)
        z = z.astype(np.float64) - z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(p)), p.argmax(1)] -= 1.0
        return p, h.astype(np.float64)

    def grad_embedding(self, emb) -> np.ndarray:
        """``(n, C * h)`` BADGE gradient embeddings (Ash et al. 2020, Sec. 3): the gradient of the cross-entropy
        at the predicted class w.r.t. the last layer's weights, ``(p - onehot(argmax p)) outer h``."""
        a, h = self.grad_factors(emb)
        return (a[:, :, None] * h[:, None, :]).reshape(len(a), -1)


def train_head(emb_labeled, y_labeled, *, num_classes: int, config: HeadConfig | None = None,
               preset: str | None = None, seed: int = 0, **overrides: Any) -> Head:
    """Train a :class:`HeadConfig` head on labelled embeddings ``(m, d)`` with int labels ``(m,)`` in
    ``[0, num_classes)``; ``seed`` sets the initialisation and the batch order. Returns a :class:`Head`.

    An MLP's BatchNorm needs two samples per batch: a last batch of one sample is left out of that epoch
    (it is in the next epochs' other batches), and an MLP head needs at least 2 labelled samples.
    """
    import torch

    cfg = resolve_config(HeadConfig, config, preset, overrides)
    seed = check_seed(seed)
    x = l2_normalize(emb_labeled)
    y = np.asarray(y_labeled, dtype=np.int64)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"{x.shape[0]} labelled embeddings for {y.shape[0]} labels (need at least one each)")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got {y.min()}..{y.max()}")
    if cfg.kind == "mlp" and x.shape[0] < 2:
        raise ValueError("an MLP head needs at least 2 labelled samples (its BatchNorm); use kind='linear'")
    with one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        d = x.shape[1]
        if cfg.kind == "mlp":
            net = torch.nn.Sequential(torch.nn.Linear(d, cfg.hidden), torch.nn.BatchNorm1d(cfg.hidden),
                                      torch.nn.ReLU(), torch.nn.Linear(cfg.hidden, num_classes))
        else:
            net = torch.nn.Sequential(torch.nn.Linear(d, num_classes))
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        else:
            opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=0.1)
        gen = torch.Generator().manual_seed(seed)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        m = x.shape[0]
        net.train()
        for _ in range(cfg.epochs):
            perm = torch.randperm(m, generator=gen)
            for s in range(0, m, cfg.batch_size):
                b = perm[s:s + cfg.batch_size]
                if cfg.kind == "mlp" and b.numel() < 2:
                    continue
                loss = torch.nn.functional.cross_entropy(net(xt[b]), yt[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
    return Head(net, cfg, num_classes)


def head_config(config: HeadConfig | None = None, preset: str | None = None, **overrides: Any) -> HeadConfig:
    """The :class:`HeadConfig` a run uses (:func:`uslkit.train.config.resolve_config`)."""
    return resolve_config(HeadConfig, config, preset, overrides)
