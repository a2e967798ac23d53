"""The learners the command line (and any driver) can run, by name: one entry per learner, no ``elif``.

Each :class:`Learner` names its config class, which inputs it needs (a labels file, an initial checkpoint) and
how to call it uniformly as ``learner.run(train_set, labels=..., init=..., test_set=..., **kwargs)``.
A new learner registers itself here with one entry.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from .config import RUN_SETTINGS, FinetuneConfig, FixMatchConfig, LearnerConfig, SimCLRConfig
from .finetune import finetune
from .fixmatch import train_fixmatch
from .simclr import train_simclr

__all__ = ["Learner", "LEARNERS"]


@dataclass(frozen=True)
class Learner:
    """A learner: ``fn`` (the Python entry point), its ``config`` class, the inputs it ``requires`` and may
    take (``"labels"``, ``"init"``), a one-line ``summary``, and ``call(fn, train_set, labels, init, test_set,
    kwargs)`` adapting the uniform call to ``fn``'s signature."""

    name: str
    fn: Callable
    config: type[LearnerConfig]
    requires: tuple[str, ...]
    accepts: tuple[str, ...]
    summary: str
    call: Callable

    def run(self, train_set, *, labels=None, init=None, test_set=None, **kwargs):
        """Run the learner; ``kwargs`` are config fields, ``preset``/``config`` and run settings."""
        for what in self.requires:
            if {"labels": labels, "init": init}[what] is None:
                raise ValueError(f"{self.name} needs {what}")
        for what, value in (("labels", labels), ("init", init)):
            if value is not None and what not in self.accepts:
                raise ValueError(f"{self.name} does not take {what}")
        return self.call(self.fn, train_set, labels, init, test_set, kwargs)

    def keywords(self) -> set[str]:
        """The keywords ``run`` passes on: config fields, run settings and the entry point's options (not inputs)."""
        own = {p.name for p in inspect.signature(self.fn).parameters.values() if p.kind is p.KEYWORD_ONLY}
        return (own - {"init", "test_set", "eval_sets"}) | set(self.config.field_names()) | set(RUN_SETTINGS)


LEARNERS: dict[str, Learner] = {
    "simclr": Learner(
        "simclr", train_simclr, SimCLRConfig, requires=(), accepts=(),
        summary="self-supervised encoder (Chen et al. 2020); its model.pt is an encoder for embed and init",
        call=lambda fn, ds, labels, init, test, kw: fn(ds, eval_sets=None if test is None else (ds, test), **kw)),
    "fixmatch": Learner(
        "fixmatch", train_fixmatch, FixMatchConfig, requires=("labels",), accepts=("labels", "init"),
        summary="semi-supervised classifier from a labels file (Sohn et al. 2020)",
        call=lambda fn, ds, labels, init, test, kw: fn(ds, labels, init=init, test_set=test, **kw)),
    "finetune": Learner(
        "finetune", finetune, FinetuneConfig, requires=("labels", "init"), accepts=("labels", "init"),
        summary="linear or full fine-tuning of a pretrained encoder on a labels file (USL's SimCLRv2-CLD protocol)",
        call=lambda fn, ds, labels, init, test, kw: fn(init, ds, labels, test_set=test, **kw)),
}
