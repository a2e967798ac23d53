"""The machinery every training loop of the kit shares.

:func:`run_loop` runs ``steps`` optimisation steps of a learner-supplied ``step_fn`` and takes care of:

- device (CUDA when present, else CPU; ``device="cuda"`` without CUDA is an error) and AMP (float16 autocast
  + gradient scaling, on CUDA only);
- determinism: batches and augmentations are functions of ``(seed, step)`` (:mod:`uslkit.train.batches`)
  and torch's global RNG is re-seeded from ``(seed, step)`` before every step, so on CPU the same inputs and
  seed give the same weights bit for bit, and a resumed run ends where an uninterrupted one does;
- checkpoints (``out_dir/state.pt``: model, extra modules, EMA, optimizer, grad scaler, step, history)
  written atomically every ``ckpt_every`` steps, every ``ckpt_minutes`` of wall time, at the end, and when
  the process gets SIGINT (Ctrl-C) or SIGTERM: the loop finishes the step, saves, and raises
  :class:`TrainingInterrupted` ("interrupted at step 16; rerun the same command to resume"); an existing
  one is resumed when the run's parameters (``out_dir/config.json``) are the same, refused with an error
  naming the differences when they are not (``overwrite=True`` starts afresh), and a finished run is loaded
  instead of re-trained;
- a per-log-step ``history`` (losses, lr, throughput in samples per second over all processes, evaluation
  metrics) returned and saved as ``out_dir/history.json``; a tqdm progress bar with loss and samples/s;
- ``torchrun``/DDP (:mod:`uslkit.train.distributed`): the module is wrapped in
  ``DistributedDataParallel``, each process gets its slice of every global batch, rank 0 writes files;
- an EMA of the network's weights (FixMatch's evaluation model) when ``ema_decay`` is given.

Files in ``out_dir``: ``config.json``, ``state.pt`` (resumable), ``history.json``, and at the end
``model.pt`` (+ ``model_ema.pt``; :func:`uslkit.train.models.load_model` reads them) and ``results.json``. A
module's ``NOT_EXPORTED`` children (training state: a momentum encoder, a memory bank) are in ``state.pt`` only,
and a finished run loaded again returns no such ``extras``.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .. import _io
from .._validate import check_positive_int, check_seed
from ..device import resolve_device
from . import distributed
from .batches import StepLoader, mix_seed
from .models import TRAIN_STATE_FORMAT

logger = logging.getLogger(__name__)

__all__ = ["RunSettings", "TrainResult", "TrainingInterrupted", "ModelEMA", "run_loop", "cosine_lr",
           "fixmatch_cosine_lr", "decay_groups", "STATE_FORMAT"]

STATE_FORMAT = TRAIN_STATE_FORMAT  # the file kind load_model and read_checkpoint accept besides models
STATE_VERSION = 1


@dataclass
class RunSettings:
    """How to run a loop (not what it learns): the keyword arguments every learner forwards.

    Attributes:
        steps: optimisation steps (global batches).
        seed: the only source of randomness.
        out_dir: folder for checkpoints, history and the final model; ``None`` keeps everything in memory.
        device: ``None``/``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"``.
        amp: float16 autocast with gradient scaling; ``None`` = on CUDA only (it is never used on CPU).
        ckpt_every: steps between checkpoints (one is always written at the end).
        ckpt_minutes: also checkpoint after the step during which this many minutes of wall time passed since
            the last one (``None``: by steps only), so a killed run loses at most that much.
        log_every: steps between history entries.
        eval_every: steps between evaluations (``None``: only at the end).
        overwrite: discard an existing run in ``out_dir`` instead of resuming or refusing it.
        progress: tqdm progress bar.
        num_workers: ``DataLoader`` worker processes per stream (0 = in the main process).
    """

    steps: int
    seed: int = 0
    out_dir: str | Path | None = None
    device: str | None = None
    amp: bool | None = None
    ckpt_every: int = 500
    ckpt_minutes: float | None = 2.0
    log_every: int = 50
    eval_every: int | None = None
    overwrite: bool = False
    progress: bool = True
    num_workers: int = 0

    def __post_init__(self) -> None:
        self.steps = check_positive_int(self.steps, name="steps")
        self.seed = check_seed(self.seed)
        self.ckpt_every = check_positive_int(self.ckpt_every, name="ckpt_every")
        if self.ckpt_minutes is not None and not (isinstance(self.ckpt_minutes, (int, float))
                                                  and not isinstance(self.ckpt_minutes, bool)
                                                  and self.ckpt_minutes > 0):
            raise ValueError(f"ckpt_minutes must be a positive number of minutes or None, got {self.ckpt_minutes!r}")
        self.log_every = check_positive_int(self.log_every, name="log_every")
        if self.eval_every is not None:
            self.eval_every = check_positive_int(self.eval_every, name="eval_every")
        self.num_workers = check_positive_int(self.num_workers, name="num_workers", minimum=0)
        if self.out_dir is not None:
            self.out_dir = Path(self.out_dir)


@dataclass
class TrainResult:
    """What a loop returns: the trained network (unwrapped, on the training device), its EMA (or ``None``),
    the extra trained modules (e.g. SimCLR's projector), the history, the final metrics and where it is."""

    net: torch.nn.Module
    ema: torch.nn.Module | None
    history: list[dict]
    metrics: dict
    out_dir: Path | None
    step: int
    resumed_from: int | None = None
    reused: bool = False
    extras: dict[str, torch.nn.Module] = field(default_factory=dict)


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a run after a checkpoint; its message says the step and how to resume."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class _StopRequests:
    """Turns SIGINT / SIGTERM into a request the loop honours between steps (main thread only; elsewhere, e.g.
    a notebook's background thread, signals keep their handlers). A second signal during the save acts at once."""

    def __init__(self):
        import signal
        import threading

        self.signum, self._old = None, {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        import signal

        self.signum = signum
        signal.signal(signum, self._old.get(signum, signal.SIG_DFL))  # a second press is not swallowed

    def restore(self):
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


class ModelEMA:
    """Exponential moving average of a network's parameters (FixMatch's evaluation model).

    After every optimiser step ``ema = decay * ema + (1 - decay) * param`` for each parameter; buffers (BN
    running statistics) are copied, as the FixMatch reference does.
    """

    def __init__(self, net: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(net).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        for e, p in zip(self.module.parameters(), net.parameters()):
            e.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)
        for e, b in zip(self.module.buffers(), net.buffers()):
            e.copy_(b)


def decay_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Optimiser param groups with weight decay on weights (``ndim > 1``) only, not on biases and BN
    parameters (the FixMatch reference and common SimCLR practice); frozen parameters are left out."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def cosine_lr(base: float, steps: int, *, warmup: int = 0, final: float = 0.0) -> Callable[[int], float]:
    """``lr(step)``: linear warm-up over ``warmup`` steps, then half-cosine from ``base`` to ``final``."""
    def lr(step: int) -> float:
        if step < warmup:
            return base * (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
    return lr


def fixmatch_cosine_lr(base: float, steps: int) -> Callable[[int], float]:
    """FixMatch's schedule ``base * cos(7 pi k / (16 K))`` (Sohn et al. 2020, sec. 4 / reference code)."""
    return lambda step: base * math.cos(7.0 * math.pi * step / (16.0 * steps))


# ----------------------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------------------
def run_loop(
    *,
    learner: str,
    params: dict[str, Any],
    module: torch.nn.Module,
    make_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer],
    lr_at: Callable[[int], float],
    loaders: dict[str, StepLoader],
    step_fn: Callable[[torch.nn.Module, dict[str, Any], int], tuple[torch.Tensor, dict[str, Any]]],
    settings: RunSettings,
    ema_decay: float | None = None,
    eval_fn: Callable[[torch.nn.Module, torch.nn.Module | None], dict[str, Any]] | None = None,
) -> TrainResult:
    """Train ``module`` for ``settings.steps`` steps of ``step_fn`` (see the module docstring).

    Args:
        learner: name recorded in the files (``"simclr"``, ``"fixmatch"``, ...).
        params: the learner's JSON-able parameters; with the architecture and ``steps``, they identify the run.
        module: ``nn.Module`` with a ``net`` attribute (a :class:`uslkit.train.models.Net`, what is exported) and
            a ``forward`` (DDP needs one); other sub-modules (a projector) are trained and checkpointed too.
        make_optimizer: builds the optimiser from the module once it is on its device. Each param group's
            ``lr`` is set to ``lr_at(step) * group.get("lr_scale", 1.0)`` before every step.
        lr_at: learning rate at a step (:func:`cosine_lr`, :func:`fixmatch_cosine_lr`).
        loaders: name -> :class:`uslkit.train.batches.StepLoader`; each step gets one batch of each, on the device.
        step_fn: ``(model, batches, step) -> (loss, stats)``; ``model`` is the (DDP-wrapped) module to call,
            ``stats`` float-able values averaged into the history.
        settings: :class:`RunSettings`.
        ema_decay: keep an EMA of ``module.net`` (FixMatch: 0.999).
        eval_fn: ``(net, ema_net) -> metrics``, called on rank 0 every ``eval_every`` steps and at the end.

    Returns:
        :class:`TrainResult`.
    """
    s = settings
    device = resolve_device(s.device)
    info, device = distributed.setup(device)
    for ld in loaders.values():
        ld.stream.set_process(info.rank, info.world_size)
    amp = (device.type == "cuda") if s.amp is None else bool(s.amp)
    if amp and device.type != "cuda":
        raise ValueError("amp=True needs CUDA (mixed precision is not used on CPU)")
    net = module.net
    arch = dict(getattr(net, "arch", {}) or {})
    config = {"learner": learner, "arch": arch, "steps": s.steps, "seed": s.seed, "ema_decay": ema_decay,
              "params": _io.to_jsonable(params)}
    module.to(device)
    optimizer = make_optimizer(module)
    ema = ModelEMA(net, ema_decay) if ema_decay is not None else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    history: list[dict] = []
    start, resumed_from = 0, None
    out = s.out_dir
    if out is not None:
        prior = _prepare_out_dir(out, config, s.overwrite, info)
        if prior == "finished":
            return _load_finished(out, module, ema, device, info)
        if prior == "resume":
            state = _read_state(out / "state.pt", device)
            _check_state(state, config, out)
            _restore(state, module, ema, optimizer, scaler)
            start, resumed_from, history = int(state["step"]), int(state["step"]), list(state["history"])
            if info.is_main:
                _say(s, f"{learner}: resuming {out} from step {start} of {s.steps}")
    model = module
    if info.enabled:
        _ddp_ignore_training_state(module)
        model = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None)
    module.train()
    iters = {k: iter(ld.iterate(start, s.steps)) for k, ld in loaders.items()}
    bar = None
    if s.progress and info.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=s.steps, initial=start, desc=learner, unit="step", dynamic_ncols=True)
    window: dict[str, float] = {}
    n_window, samples, t_window = 0, 0, time.perf_counter()
    if start and "window" in state:  # a checkpoint between log steps: the partial averages go on
        window, n_window = dict(state["window"]), int(state["n_window"])
    metrics: dict = {}
    stops = _StopRequests() if out is not None else None
    t_ckpt = time.monotonic()
    try:
        for step in range(start, s.steps):
            torch.manual_seed(mix_seed(s.seed, 0x5EED, step))
            lr = lr_at(step)
            for g in optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            batches = {k: _to_device(next(it), device) for k, it in iters.items()}
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                loss, stats = step_fn(model, batches, step)
            if not torch.isfinite(loss.detach()).all():
                raise FloatingPointError(f"{learner}: loss is {loss.item()} at step {step}; lower the learning rate "
                                         f"(now {lr:.4g}) or check the inputs")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(net)
            window["loss"] = window.get("loss", 0.0) + float(loss.detach())
            for k, v in stats.items():
                if torch.is_tensor(v) and v.numel() != 1:
                    continue
                window[k] = window.get(k, 0.0) + float(v)
            n_window += 1
            samples += sum(_batch_len(b) for b in batches.values()) * info.world_size
            done = step + 1
            last = done == s.steps
            if done % s.log_every == 0 or last:
                elapsed = time.perf_counter() - t_window
                entry = {"step": done, "lr": lr, "samples_per_s": samples / max(elapsed, 1e-9),
                         **{k: v / n_window for k, v in window.items()}}
                entry.update(distributed.mean_over_processes(
                    {k: entry[k] for k in window}, info, device))
                for k, ld in loaders.items():
                    entry[f"epoch_{k}"] = ld.stream.epoch_of(done)
                if eval_fn is not None and ((s.eval_every and done % s.eval_every == 0) or last):
                    metrics = _evaluate(eval_fn, net, ema, info) or {}
                    entry.update(metrics)
                    module.train()
                history.append(entry)
                window, n_window, samples, t_window = {}, 0, 0, time.perf_counter()
                if bar is not None:
                    bar.set_postfix(loss=f"{entry['loss']:.4f}", samples_s=f"{entry['samples_per_s']:.0f}",
                                    refresh=False)
                if out is not None and info.is_main:
                    _io.atomic_write_json(out / "history.json", history)
            elif eval_fn is not None and s.eval_every and done % s.eval_every == 0:
                metrics = _evaluate(eval_fn, net, ema, info) or {}
                history.append({"step": done, **metrics})
                module.train()
            due, stop = _checkpoint_due(s, stops, t_ckpt, info, device) if out is not None else (False, False)
            if out is not None and (done % s.ckpt_every == 0 or last or due or stop):
                if info.is_main:
                    _write_state(out / "state.pt", config, module, ema, optimizer, scaler, done, history,
                                 window=window, n_window=n_window)
                distributed.barrier(info)
                t_ckpt = time.monotonic()
            if bar is not None:
                bar.update(1)
            if stop and not last:
                if bar is not None:
                    bar.close()
                raise TrainingInterrupted(f"{learner}: interrupted at step {done} of {s.steps}; checkpoint saved in "
                                          f"{out}; rerun the same command to resume", done)
    finally:
        if stops is not None:
            stops.restore()
    if bar is not None:
        bar.close()
    if start == s.steps and eval_fn is not None:  # resumed a run whose last checkpoint was its end
        metrics = _evaluate(eval_fn, net, ema, info) or {}
    module.eval()
    if out is not None and info.is_main:
        _export(out, config, module, ema, metrics, history)
    distributed.barrier(info)
    return TrainResult(net=net, ema=None if ema is None else ema.module, history=history, metrics=metrics,
                       out_dir=out, step=s.steps, resumed_from=resumed_from,
                       extras=_extras(module))


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
def _say(s: RunSettings, msg: str) -> None:
    """A one-line notice on stderr when the run shows progress (the log otherwise)."""
    if s.progress:
        import sys

        print(msg, file=sys.stderr, flush=True)
    else:
        logger.info(msg)


def _checkpoint_due(s: RunSettings, stops: _StopRequests, t_ckpt: float, info, device) -> tuple[bool, bool]:
    """``(time for a wall-clock checkpoint, stop requested)``, agreed by every process under DDP (max over
    ranks), so they all save and stop after the same step."""
    due = s.ckpt_minutes is not None and time.monotonic() - t_ckpt >= 60 * s.ckpt_minutes
    stop = stops is not None and stops.signum is not None
    if info.enabled:
        flags = torch.tensor([float(due), float(stop)], device=device)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        due, stop = bool(flags[0]), bool(flags[1])
    return due, stop


def _evaluate(eval_fn, net, ema, info) -> dict:
    metrics = None
    if info.is_main:
        was = net.training
        net.eval()
        with torch.no_grad():
            metrics = eval_fn(net, None if ema is None else ema.module)
        net.train(was)
    return distributed.broadcast_object(metrics, info)


def _to_device(obj, device):
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def _batch_len(batch) -> int:
    """Samples (not views) in a ``(images or views, labels, indices, seeds)`` batch."""
    return int(batch[1].shape[0])


def _ddp_ignore_training_state(module) -> None:
    """Keep DDP away from the ``NOT_EXPORTED`` and ``KEPT_IN_SYNC`` children (a momentum encoder, a memory bank,
    pseudo-labels): the learner keeps their parameters and state equal on every process itself (EMA of the synced
    weights, updates from gathered rows, a broadcast), so DDP neither reduces nor re-broadcasts them at every forward
    (a bank or a per-image cache can be gigabytes). A momentum encoder's BN running statistics stay each process's
    own (it runs in train mode, on batch statistics)."""
    children = dict.fromkeys([*getattr(module, "NOT_EXPORTED", ()), *getattr(module, "KEPT_IN_SYNC", ())])
    names = [f"{child}.{n}" for child in children
             for n, _ in [*getattr(module, child).named_parameters(), *getattr(module, child).named_buffers()]]
    if names:
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, names)


def _extras(module) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in module.named_children() if name != "net"}


def _config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} in the folder, {b!r} now")
    return diffs


def _prepare_out_dir(out: Path, config: dict, overwrite: bool, info) -> str:
    """``"fresh"``, ``"resume"`` or ``"finished"``; refuses a folder holding a different run."""
    cfg_path = out / "config.json"
    status = "fresh"
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for name in ("state.pt", "history.json", "results.json", "model.pt", "model_ema.pt", "config.json"):
                (out / name).unlink(missing_ok=True)
        if cfg_path.exists():
            old = _io.read_json(cfg_path)
            diffs = _config_diff({k: old.get(k) for k in config}, config)
            if diffs:
                raise ValueError(
                    f"{out} holds a {old.get('learner')!r} run with other parameters ({'; '.join(diffs[:6])}"
                    f"{'; ...' if len(diffs) > 6 else ''}); use another out_dir (--out), or overwrite=True "
                    "(--overwrite) to discard it")
            if (out / "results.json").exists() and (out / "model.pt").exists():
                status = "finished"
            elif (out / "state.pt").exists():
                status = "resume"
        elif (out / "state.pt").exists():
            raise ValueError(f"{out} has a state.pt but no config.json; use another out_dir or overwrite=True "
                             "(--overwrite)")
        if status == "fresh":
            _io.atomic_write_json(cfg_path, {**config, **_io.provenance()})
    return distributed.broadcast_object(status, info)


def _read_state(path: Path, device) -> dict:
    from .models import read_checkpoint

    try:
        state = read_checkpoint(path, map_location=device)  # weights_only: a checkpoint runs no code
    except ValueError as e:
        raise ValueError(f"{e}; delete it or use overwrite=True (--overwrite)") from e
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a uslkit training checkpoint (format {state.get('format')!r})")
    return state


def _check_state(state: dict, config: dict, out: Path) -> None:
    if state.get("arch") != config["arch"]:
        raise ValueError(f"checkpoint {out / 'state.pt'} is of architecture {state.get('arch')}, this run builds "
                         f"{config['arch']}")
    diffs = _config_diff(state.get("config", {}), config)
    if diffs:
        raise ValueError(f"checkpoint {out / 'state.pt'} was written by another run: {'; '.join(diffs[:6])}")


def _restore(state, module, ema, optimizer, scaler) -> None:
    module.net.load_state_dict(state["model"])
    for name, child in _extras(module).items():
        child.load_state_dict(state["extras"][name])
    if ema is not None:
        ema.module.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])


def _state_dict(config, module, ema, optimizer, scaler, step, history) -> dict:
    return {
        "format": STATE_FORMAT, "version": STATE_VERSION, "config": config, "arch": config["arch"],
        "model": module.net.state_dict(),
        "extras": {name: child.state_dict() for name, child in _extras(module).items()},
        "ema": None if ema is None else ema.module.state_dict(),
        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "step": step, "history": history,
    }


def _write_state(path: Path, config, module, ema, optimizer, scaler, step, history, *, window=None,
                 n_window=0) -> None:
    """``state.pt``, atomically; ``window``/``n_window``: the sums of the history entry being averaged (a
    checkpoint between log steps), so a resumed run logs what an uninterrupted one does."""
    state = _state_dict(config, module, ema, optimizer, scaler, step, history)
    state.update(window=dict(window or {}), n_window=int(n_window))
    buf = io.BytesIO()
    torch.save(state, buf)
    _io.atomic_write_bytes(path, buf.getvalue())


def _export(out: Path, config, module, ema, metrics, history) -> None:
    from .models import save_model

    skip = set(getattr(module, "NOT_EXPORTED", ()))  # training state only (a momentum encoder, a memory bank)
    save_model(out / "model.pt", module.net, extra={"learner": config["learner"], "step": config["steps"],
                                                  "extras": {n: c.state_dict() for n, c in _extras(module).items()
                                                             if n not in skip}},
               overwrite=True)
    if ema is not None:
        save_model(out / "model_ema.pt", ema.module, extra={"learner": config["learner"], "ema": True},
                   overwrite=True)
    _io.atomic_write_json(out / "history.json", history)
    _io.atomic_write_json(out / "results.json", {"config": config, "metrics": metrics, **_io.provenance()})


def _load_finished(out: Path, module, ema, device, info) -> TrainResult:
    from .models import load_model, read_checkpoint

    res = _io.read_json(out / "results.json")
    if info.is_main:
        logger.info("%s: %s already holds this finished run; loading it instead of training", res["config"]["learner"],
                    out)
    saved = load_model(out / "model.pt", map_location=device, expect=module.net.arch)
    module.net.load_state_dict(saved.state_dict())
    extras = read_checkpoint(out / "model.pt", map_location=device).get("extra", {}).get("extras", {})
    for name, child in _extras(module).items():
        if name in extras:
            child.load_state_dict(extras[name])
    ema_net = None
    if ema is not None:
        ema_net = load_model(out / "model_ema.pt", map_location=device, expect=module.net.arch)
    module.eval()
    history = _io.read_json(out / "history.json") if (out / "history.json").exists() else []
    return TrainResult(net=module.net, ema=ema_net, history=history, metrics=res.get("metrics", {}), out_dir=out,
                       step=int(res["config"]["steps"]), reused=True,
                       extras={n: c for n, c in _extras(module).items() if n in extras})  # NOT_EXPORTED: not kept
