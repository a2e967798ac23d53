"""The learners the command line (and any driver) can run, by name: one entry per learner, no ``elif``.

Each :class:`Learner` names its config class, which inputs it needs (a labels file, an initial checkpoint) and
how to call it uniformly as ``learner.run(train_set, labels=..., init=..., test_set=..., **kwargs)``.
A new learner registers itself here with one entry.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from .comatch import train_comatch
from .config import (RUN_SETTINGS, CMSFConfig, CoMatchConfig, FinetuneConfig, FixMatchConfig, LearnerConfig,
                     MixMatchConfig, MoCoConfig, MSFConfig, SeLaConfig, SimCLRConfig)
from .finetune import finetune
from .fixmatch import train_fixmatch
from .mixmatch import train_mixmatch
from .moco import train_moco
from .msf import train_cmsf, train_msf
from .sela import train_sela
from .simclr import train_simclr

__all__ = ["Learner", "LEARNERS"]

_INPUT_HELP = {"labels": "an annotated labels file", "init": "a pretrained checkpoint"}


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

    def check_inputs(self, *, labels=None, init=None, prefix: str = "") -> None:
        """``ValueError`` when a required input is missing or a given one is not taken; ``prefix`` spells the
        names in the caller's terms (``"--"`` on the command line)."""
        given = {"labels": labels, "init": init}
        missing = [w for w in self.requires if given[w] is None]
        if missing:
            raise ValueError(f"{self.name} needs " + " and ".join(prefix + w for w in self.requires)
                             + " (" + ", ".join(_INPUT_HELP[w] for w in self.requires) + ")")
        extra = [w for w, v in given.items() if v is not None and w not in self.accepts]
        if extra:
            raise ValueError(f"{prefix}{extra[0]} is not an option of {self.name}")

    def run(self, train_set, *, labels=None, init=None, test_set=None, **kwargs):
        """Run the learner; ``kwargs`` are config fields, ``preset``/``config`` and run settings."""
        self.check_inputs(labels=labels, init=init)
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
    "comatch": Learner(
        "comatch", train_comatch, CoMatchConfig, requires=("labels",), accepts=("labels", "init"),
        summary="semi-supervised classifier with contrastive graph regularisation from a labels file (Li et al. 2021)",
        call=lambda fn, ds, labels, init, test, kw: fn(ds, labels, init=init, test_set=test, **kw)),
    "finetune": Learner(
        "finetune", finetune, FinetuneConfig, requires=("labels", "init"), accepts=("labels", "init"),
        summary="linear or full fine-tuning of a pretrained encoder on a labels file (USL's SimCLRv2-CLD protocol)",
        call=lambda fn, ds, labels, init, test, kw: fn(init, ds, labels, test_set=test, **kw)),
    "mixmatch": Learner(
        "mixmatch", train_mixmatch, MixMatchConfig, requires=("labels",), accepts=("labels", "init"),
        summary="semi-supervised classifier from a labels file (Berthelot et al. 2019)",
        call=lambda fn, ds, labels, init, test, kw: fn(ds, labels, init=init, test_set=test, **kw)),
    "moco": Learner(
        "moco", train_moco, MoCoConfig, requires=(), accepts=(),
        summary="self-supervised encoder, MoCo v2 (Chen et al. 2020); its model.pt is an encoder for embed and init",
        call=lambda fn, ds, labels, init, test, kw: fn(ds, eval_sets=None if test is None else (ds, test), **kw)),
    "msf": Learner(
        "msf", train_msf, MSFConfig, requires=(), accepts=(),
        summary="self-supervised encoder by mean shift (Koohpayegani et al. 2021); model.pt is an encoder",
        call=lambda fn, ds, labels, init, test, kw: fn(ds, eval_sets=None if test is None else (ds, test), **kw)),
    "cmsf": Learner(
        "cmsf", train_cmsf, CMSFConfig, requires=(), accepts=("labels",),
        summary="constrained mean shift (Tejankar et al. 2022): constraint 2q / km, or labels with --labels",
        call=lambda fn, ds, labels, init, test, kw: fn(ds, labels, eval_sets=None if test is None else (ds, test),
                                                       **kw)),
    "sela": Learner(
        "sela", train_sela, SeLaConfig, requires=(), accepts=(),
        summary="self-labelling with Sinkhorn-Knopp (Asano et al. 2020); model.pt is an encoder",
        call=lambda fn, ds, labels, init, test, kw: fn(ds, eval_sets=None if test is None else (ds, test), **kw)),
}
