"""Command line: ``uslkit <command> ...`` (also ``python -m uslkit <command> ...``).

Commands: ``datasets`` (list and check datasets), ``embed`` (compute cached embeddings), ``select``
(choose samples to label and write the labels file), ``labels`` (export the picks for a person, import
their labels, merge rounds), ``train`` (SimCLR, FixMatch, fine-tuning; runs under
``torchrun`` too), ``demo`` (the README's main job). Every command has
``--help``. Bad input prints ``uslkit: error: <what is wrong>`` and exits with status 2; nothing is
overwritten without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser", "parse_param"]


class CLIError(Exception):
    """A user error reported as one line and exit status 2."""


def cli_terms(message: str) -> str:
    """A library message in command-line terms: ``"pass overwrite=True (--overwrite)"`` -> ``"pass --overwrite"``
    (the library names both; the command line shows only its own)."""
    return re.sub(r"\b\w+=[\w.'\"]+ \((--[\w-]+[^)]*)\)", r"\1", message)


def parse_param(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> ``(key, value)``: dashes in the key become underscores, the value is parsed as JSON
    (``true``/``false``/``none`` case-insensitively, else the plain string); an ``argparse`` type."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    key = key.strip().replace("-", "_")
    if not key.isidentifier():
        raise argparse.ArgumentTypeError(f"--param key {key!r} is not a valid name")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = {"true": True, "false": False, "none": None, "null": None}.get(value.lower(), value)
    return key, parsed


def _output(path: str, overwrite: bool, *, inputs: dict[str, Path]) -> Path:
    """``--out`` checked before any work: not a folder, not one of the command's inputs (``--overwrite`` would
    replace what it reads), and not an existing file unless ``--overwrite``."""
    out = Path(path)
    if out.is_dir():
        raise CLIError(f"--out {out} is a folder; give a file name (e.g. --out {out / 'out.json'})")
    for flag, given in inputs.items():
        if out.resolve() == given.resolve():
            raise CLIError(f"--out {out} is {flag} ({given}): writing there would replace the input; choose "
                           "another --out")
    if out.exists() and not overwrite:
        raise CLIError(f"--out {out} already exists; pass --overwrite to replace it")
    return out


# ----------------------------------------------------------------------------------------------------------
# datasets
# ----------------------------------------------------------------------------------------------------------
def _cmd_datasets(args) -> int:
    from .data import available_datasets, load_dataset

    # an image folder is whatever folder you point at: only check it when it is named explicitly
    names = [args.name] if args.name else [n for n in available_datasets() if n != "imagefolder"]
    for name in names:
        if not args.check:
            print(name)
            continue
        try:
            ds = load_dataset(name, args.split, root=args.data_root, download=args.download)
        except Exception as e:  # report every dataset, do not stop at the first missing one
            # the first line, the folders searched (indented), how to get it (in command-line terms)
            lines = re.sub(r"load_dataset\('(\w+)', root='([^']*)', download=True\)",
                           r"uslkit datasets \1 --check --download --data-root \2", str(e)).splitlines()
            print(f"{name:14s} {args.split:10s} MISSING  {lines[0]}"
                  + "".join(f"\n{'':26s}{ln.strip()}" for ln in lines[1:] if ln.strip()))
        else:
            shape = None if ds.images is None else tuple(ds.images.shape)
            print(f"{name:14s} {args.split:10s} ok  n={len(ds)} classes={ds.num_classes} images={shape}"
                  f" from {ds.root}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# embed
# ----------------------------------------------------------------------------------------------------------
def _cmd_embed(args) -> int:
    import time

    from .embed import EmbeddingMismatchError, compute_embeddings

    if args.out is not None and Path(args.out).is_dir():
        raise CLIError(f"--out {args.out} is a folder; give a file name (e.g. --out {Path(args.out) / 'emb.npy'})")
    t0 = time.perf_counter()
    try:
        emb, meta = compute_embeddings(
            args.dataset, split=args.split, encoder=args.encoder, pca=args.pca, seed=args.seed,
            root=args.data_root, cache_dir=args.cache_dir, out=args.out, overwrite=args.overwrite,
            weights=args.weights, image_size=args.image_size, features=args.features, batch_size=args.batch_size,
            device=args.device, progress=not args.quiet, download=args.download,
        )
    except EmbeddingMismatchError as e:
        raise CLIError(str(e)) from e
    dt = time.perf_counter() - t0
    verb = "reused" if meta.get("reused") else "wrote"
    print(f"{verb} {meta.get('path')}: {emb.shape[0]} x {emb.shape[1]} float32 "
          f"({args.dataset}/{args.split}, {args.encoder}{f', pca {args.pca}' if args.pca else ''}) in {dt:.1f} s")
    return 0


# ----------------------------------------------------------------------------------------------------------
# select
# ----------------------------------------------------------------------------------------------------------
def _load_labeled(path: str | None, n: int, dataset) -> Any:
    """Indices already labelled, from a labels JSON or an index .npy/.txt, validated against ``n``."""
    if path is None:
        return None
    import numpy as np

    from ._validate import check_indices
    from .labels import load_selection

    p = Path(path)
    if not p.exists():
        raise CLIError(f"--labeled file {p} does not exist")
    if p.suffix == ".json":
        sel = load_selection(p, dataset=dataset)
        prior = list(getattr(sel, "labeled_before", []) or [])
        return check_indices(np.asarray(prior + list(sel.indices), dtype=np.int64), n, name="--labeled")
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
    else:
        arr = np.loadtxt(p, dtype=np.int64, ndmin=1)
    return check_indices(arr.ravel(), n, name="--labeled")


def _usl_t_run_dir(args, params: dict) -> Path:
    """``--method usl_t``: check ``--param`` and ``--preset`` in command-line terms before any data is loaded and
    return the run folder (``--run-dir``, default ``<--out without its suffix>_run``)."""
    from .train.config import RUN_SETTINGS, USLTConfig, resolve_config

    own = {"seed": "--seed", "out_dir": "--run-dir", "preset": "--preset", "feats": "--emb"}
    fields = set(USLTConfig.field_names())
    valid = fields | {"head", "batched_augment"} | (set(RUN_SETTINGS) - set(own))
    for key in params:
        if key in own:
            raise CLIError(f"--param {key}=... is set by its own option ({own[key]})")
        if key not in valid:
            raise CLIError(f"--param {key}=... is not an option of usl_t; valid: USLTConfig fields {sorted(fields)}, "
                           f"head, batched_augment and run settings {sorted(set(RUN_SETTINGS) - set(own))}")
    if args.preset is not None and args.preset not in USLTConfig.PRESETS:
        raise CLIError(f"unknown usl_t --preset {args.preset!r}; valid: {', '.join(USLTConfig.PRESETS)}")
    cfg = resolve_config(USLTConfig, None, args.preset, {k: v for k, v in params.items() if k in fields})
    if cfg.missing():
        raise CLIError("usl_t needs --param steps=N or --param epochs=X (or a --preset that sets one: "
                       f"{', '.join(USLTConfig.PRESETS)})")
    head = params.get("head", 0)
    if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < cfg.heads:
        raise CLIError(f"--param head={head!r} is not a head: 0 <= head < heads={cfg.heads}")
    if args.run_dir is not None:
        return Path(args.run_dir)
    out = Path(args.out)
    return out.with_name(out.stem + "_run")


def _cmd_select(args) -> int:
    import time

    from .embed import load_embeddings
    from .labels import make_selection, save_selection
    from .select import select

    emb_path = Path(args.emb)
    out = _output(args.out, args.overwrite, inputs={"--emb": emb_path,
                                                    "--emb's sidecar": emb_path.with_suffix(".json")})
    usl_t = args.method == "usl_t"  # trains on the images from an encoder: not a select() method
    for flag, value in (("--init", args.init), ("--preset", args.preset), ("--run-dir", args.run_dir)):
        if value is not None and not usl_t:
            raise CLIError(f"{flag} is an option of --method usl_t only")
    if usl_t and args.init is None:
        raise CLIError("method usl_t needs --init MODEL.pt (the encoder checkpoint it trains from)")
    params = dict(args.param or [])
    run_dir = _usl_t_run_dir(args, params) if usl_t else None
    emb, meta = load_embeddings(args.emb, mmap=not usl_t)  # read on demand: no in-memory copy of a float32 file
    dataset = None
    name = args.dataset or meta.get("dataset")
    split = args.split or meta.get("split") or "train"
    if name and not args.no_dataset:
        from .data import load_dataset

        dataset = load_dataset(name, split, root=args.data_root)
        if len(dataset) != emb.shape[0]:
            raise CLIError(
                f"mismatched ids: {args.emb} has {emb.shape[0]} rows but {name}/{split} has {len(dataset)} samples"
            )
    labeled = _load_labeled(args.labeled, emb.shape[0], dataset)
    if args.method == "stratified" and dataset is None:
        raise CLIError("method 'stratified' is an oracle baseline and needs the dataset's true labels "
                       "(give --dataset or use embeddings with a sidecar)")
    y = None if dataset is None else dataset.labels  # select() hands them to the stratified oracle only
    t0 = time.perf_counter()
    if usl_t:
        from .select.usl_t import check_embedding_for_encoder, select_usl_t

        if dataset is None or labeled is not None:
            raise CLIError("method usl_t trains on the images (give --dataset or an embedding with a sidecar, not "
                           "--no-dataset) and selects from scratch (no --labeled)")
        check_embedding_for_encoder(meta, dataset, args.init)
        idx, info = select_usl_t(dataset, args.init, args.budget, feats=emb, seed=args.seed, out_dir=run_dir,
                                 preset=args.preset, **params)
        params = info["params"]
    else:
        idx = select(args.method, emb, args.budget, seed=args.seed, labeled=labeled, labels=y, **params)
    dt = time.perf_counter() - t0
    emb_info = {k: meta[k] for k in ("dataset", "split", "encoder", "params", "seed", "n", "dim",
                                      "data_fingerprint") if k in meta}
    emb_info["path"] = str(args.emb)
    sel = make_selection(
        idx, dataset=dataset, n=emb.shape[0], dataset_name=name, split=split, method=args.method,
        params=params, seed=args.seed, embedding=emb_info,
        labeled_before=None if labeled is None else [int(i) for i in labeled],
    )
    if args.annotate:
        if dataset is None:
            raise CLIError("--annotate needs the dataset (its ground truth is the simulated oracle)")
        from .labels import annotate

        sel = annotate(sel, dataset)
    save_selection(sel, out, overwrite=args.overwrite)
    msg = f"selected {len(idx)} of {emb.shape[0]} with {args.method} (seed {args.seed}) in {dt:.2f} s -> {out}"
    if dataset is not None and dataset.labels.min() >= 0:
        from .evaluate import class_coverage

        msg += f"; class coverage {class_coverage(dataset.labels[idx], dataset.num_classes):.0%}"
    print(msg)
    return 0


# ----------------------------------------------------------------------------------------------------------
# active
# ----------------------------------------------------------------------------------------------------------
def _cmd_active(args) -> int:
    from .active import STRATEGIES, paper_schedule, run_active
    from .data import load_dataset
    from .embed import load_embeddings

    if args.strategy not in STRATEGIES:
        raise CLIError(f"--strategy {args.strategy!r} is not one of {', '.join(STRATEGIES)}")
    if (args.schedule is None) == (args.max_labels is None):
        raise CLIError("give either --schedule (labels per round) or --max-labels (paper 003's steps)")
    schedule = args.schedule if args.schedule is not None else paper_schedule(args.max_labels)
    if not schedule or any(b <= a for a, b in zip(schedule, schedule[1:])) or schedule[0] < 1:
        raise CLIError("--schedule must be increasing label counts from at least 1, got "
                       + " ".join(map(str, schedule)))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; give a folder for the run")
    emb, meta = load_embeddings(args.emb)
    name, split = meta.get("dataset"), meta.get("split") or "train"
    if not name:
        raise CLIError(f"--emb {args.emb} has no dataset in its sidecar: the oracle needs the dataset's labels")
    pool = load_dataset(name, split, root=args.data_root)
    if len(pool) != emb.shape[0]:
        raise CLIError(f"--emb {args.emb} has {emb.shape[0]} rows but {name}/{split} has {len(pool)} samples")
    initial = None
    if args.labels:
        from .labels import load_selection

        sel = load_selection(args.labels, dataset=pool)  # a file of another dataset or split is refused here
        if not sel.is_annotated:
            raise CLIError(f"--labels {args.labels} has no labels yet: fill them in (uslkit labels import) first")
        idx = sel.labeled_indices(include_before=True)
        if sel.labeled_before:
            raise CLIError(f"--labels {args.labels} is one round of several (labeled_before): merge the rounds with "
                           "`uslkit labels merge` and give the merged file")
        initial = sel.as_arrays()
        schedule = [len(idx), *[b for b in schedule if b > len(idx)]]
    if schedule[-1] > len(pool):
        raise CLIError(f"--schedule goes up to {schedule[-1]} labels but the pool has {len(pool)} samples")
    test_emb = test_labels = None
    if args.test_emb:
        test_emb, tmeta = load_embeddings(args.test_emb)
        for key in ("dataset", "encoder", "params"):
            if tmeta.get(key) != meta.get(key):
                raise CLIError(f"--test-emb {args.test_emb} was made with {key} {tmeta.get(key)!r} but --emb with "
                               f"{meta.get(key)!r}: both must come from the same dataset and encoder")
        test = load_dataset(name, tmeta.get("split") or "test", root=args.data_root)
        if len(test) != test_emb.shape[0]:
            raise CLIError(f"--test-emb {args.test_emb} has {test_emb.shape[0]} rows but {name}/{test.split} has "
                           f"{len(test)} samples")
        test_labels = test.labels
    classifier = None
    if args.finetune_param and not args.finetune:
        raise CLIError("--finetune-param needs --finetune MODEL.pt")
    if args.finetune:
        from .active import FinetuneClassifier

        if not Path(args.finetune).is_file():
            raise CLIError(f"--finetune {args.finetune}: no such checkpoint")
        if args.head_preset or args.head_param:
            raise CLIError("--finetune replaces the head: drop --head-preset / --head-param")
        try:
            classifier = FinetuneClassifier(args.finetune, pool, test_set=test if test_emb is not None else None,
                                            progress=not args.quiet, **dict(args.finetune_param or []))
        except (TypeError, ValueError) as e:
            raise CLIError(f"--finetune-param: {e}") from e
        test_emb = test_labels = None
    res = run_active(emb, pool.labels, strategy=args.strategy, schedule=schedule, start=args.start, seed=args.seed,
                     num_classes=pool.num_classes, head_preset=args.head_preset,
                     head_params=dict(args.head_param or []), strategy_params=dict(args.param or []),
                     start_params=dict(args.start_param or []), initial=initial, test_emb=test_emb,
                     test_labels=test_labels, classifier=classifier,
                     out_dir=out, dataset=pool, overwrite=args.overwrite, progress=not args.quiet)
    if res.resumed_from:
        print(f"resumed after round {res.resumed_from - 1} of {len(schedule)}")
    print("labels  test acc  coverage  balance")
    for r in res.rounds:
        acc = "    -   " if r["test_acc"] is None else f"{100 * r['test_acc']:7.2f}%"
        print(f"{r['labeled']:6d}  {acc}  {100 * r['coverage']:7.1f}%  {r['balance']:.3f}")
    first = f"--labels {args.labels}" if args.labels else f"start {args.start}"
    print(f"{len(res.rounds)} rounds of {args.strategy} ({first}, seed {args.seed}) -> {out}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------------------
#: command-line options that set a learner's config field when given (each only where the config has it)
_TRAIN_FIELD_OPTIONS = {"arch": "--arch", "mode": "--mode", "steps": "--steps", "epochs": "--epochs",
                        "batch_size": "--batch-size"}
#: run settings with their own option (``--out`` for out_dir)
_TRAIN_RUN_OPTIONS = ("seed", "device", "overwrite", "num_workers", "ckpt_every", "ckpt_minutes", "log_every",
                      "eval_every")


def learner_options_table(name: str) -> str:
    """The options of learner ``name`` for ``uslkit train NAME --help``: every config field with its default and
    each preset's value (set with its own option or ``--param FIELD=VALUE``)."""
    import dataclasses

    from .train.registry import LEARNERS

    learner = LEARNERS[name]
    cls = learner.config
    presets = dict(cls.PRESETS)
    base = cls()
    head = ["option", "default", *(f"--preset {p}" for p in presets)]
    rows = []
    for f in dataclasses.fields(cls):
        flag = _TRAIN_FIELD_OPTIONS.get(f.name, f"--param {f.name}=")
        rows.append([flag, repr(getattr(base, f.name)), *(repr(getattr(c, f.name)) for c in presets.values())])
    widths = [max(len(r[j]) for r in [head, *rows]) for j in range(len(head))]
    lines = [f"{name}: {learner.summary}", f"options of {name} ({cls.__name__}; an option given wins over the "
             "preset's value):", ""]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    lines += ["", f"None: not set, or derived from the others (help(uslkit.train.{cls.__name__}) says how)."]
    return "\n".join(lines)


class _TrainHelp(argparse.Action):
    """``uslkit train [LEARNER] --help``: the command's help, then the learner's options with defaults and presets."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from .train.registry import LEARNERS

        parser.print_help()
        learner = getattr(namespace, "learner", None)
        if learner in LEARNERS:
            print("\n" + learner_options_table(learner))
        else:
            print("\nlearners (uslkit train LEARNER --help lists its options, defaults and presets):")
            for name, ln in LEARNERS.items():
                print(f"  {name:10s} {ln.summary}")
        parser.exit()


def _cmd_train(args) -> int:
    from .data import load_dataset
    from .train.config import resolve_config
    from .train.registry import LEARNERS

    if args.learner not in LEARNERS:
        raise CLIError(f"unknown learner {args.learner!r}; valid: {sorted(LEARNERS)}")
    learner = LEARNERS[args.learner]
    kwargs = dict(args.param or [])
    unknown = sorted(set(kwargs) - learner.keywords())
    if unknown:
        raise CLIError(f"unknown {learner.name} parameter(s) {unknown}; see help(uslkit.train.{learner.fn.__name__}) "
                       f"and uslkit.train.{learner.config.__name__}")
    own = {**_TRAIN_FIELD_OPTIONS, **{k: "--" + k.replace("_", "-") for k in _TRAIN_RUN_OPTIONS},
           "preset": "--preset", "progress": "--quiet", "out_dir": "--out"}
    clash = sorted(k for k in kwargs if k in own)
    if clash:
        raise CLIError(f"--param {clash[0]}=... has its own option: use {own[clash[0]]}")
    fields = set(learner.config.field_names())
    for key, flag in _TRAIN_FIELD_OPTIONS.items():
        value = getattr(args, key)
        if value is None:
            continue
        if key not in fields:
            raise CLIError(f"{flag} is not an option of {learner.name}")
        kwargs[key] = value
    learner.check_inputs(labels=args.labels, init=args.init, prefix="--")
    if args.preset is not None:
        presets = learner.config.PRESETS
        if args.preset not in presets:
            raise CLIError(f"unknown {learner.name} --preset {args.preset!r}; valid: {sorted(presets)}")
        kwargs["preset"] = args.preset
    # what the run still needs, said before any data is loaded, in command-line terms
    cfg = resolve_config(learner.config, None, args.preset, {k: v for k, v in kwargs.items() if k in fields})
    for group in cfg.missing():
        raise CLIError(f"{learner.name} needs " + " or ".join("--" + k.replace("_", "-") for k in group)
                       + " (or a --preset that sets it)")
    kwargs.update(seed=args.seed, out_dir=args.out, device=args.device, overwrite=args.overwrite,
                  progress=not args.quiet, num_workers=args.num_workers)
    for key in ("ckpt_every", "ckpt_minutes", "log_every", "eval_every"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    train = load_dataset(args.dataset, args.split, root=args.data_root, download=args.download)
    test = None
    if args.test_split:
        test = load_dataset(args.dataset, args.test_split, root=args.data_root, download=args.download)
    res = learner.run(train, labels=args.labels, init=args.init, test_set=test, **kwargs)
    shown = {k: v for k, v in res.metrics.items() if not isinstance(v, list)}
    how = "loaded (already finished)" if res.reused else f"trained {res.step} steps"
    print(f"{args.learner}: {how} -> {args.out}; " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    return 0


# ----------------------------------------------------------------------------------------------------------
# labels: export / import / merge
# ----------------------------------------------------------------------------------------------------------
def _cmd_labels_export(args) -> int:
    from .data import load_dataset
    from .labels import check_against_dataset, export_for_labelling, load_selection

    sel = load_selection(args.selection)
    name = args.dataset or sel.dataset
    if not name:
        raise CLIError(f"{args.selection} names no dataset; give --dataset")
    dataset = load_dataset(name, args.split or sel.split, root=args.data_root)
    try:  # export_for_labelling checks it too; here the message also names the dataset option
        check_against_dataset(sel, dataset)
    except ValueError as e:
        raise CLIError(f"{args.selection}: {e} (--dataset {name})") from e
    to = export_for_labelling(sel, dataset, args.to, class_names=_classes(args.classes),
                              document_root=args.document_root, overwrite=args.overwrite)
    print(f"exported {sel.budget} images to {to}: fill {to / 'manifest.csv'} (or import {to / 'label_studio.json'} "
          f"into Label Studio with {to / 'label_studio.xml'}), then `uslkit labels import`")
    return 0


def _classes(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise CLIError("--classes expects comma-separated class names, e.g. --classes cat,dog")
    return names


def _cmd_labels_import(args) -> int:
    from .labels import import_labels, load_selection, save_selection

    out = _output(args.out, args.overwrite, inputs={"the filled file": Path(args.file)})
    sel = load_selection(args.into)
    names = _classes(args.classes)
    if names is None and args.dataset:
        from .data import load_dataset

        names = load_dataset(args.dataset, sel.split, root=args.data_root).class_names
    res = import_labels(args.file, sel, class_names=names, allow_partial=args.allow_partial)  # errors: main()
    save_selection(res, out, overwrite=args.overwrite)
    info = res.params["labelling"]
    print(f"labelled {info['labelled']} of {info['of']} picks -> {out}"
          + (f" ({info['of'] - info['labelled']} unlabelled left out)" if info["labelled"] < info["of"] else ""))
    return 0


def _cmd_labels_merge(args) -> int:
    from .labels import merge_selections, save_selection

    out = _output(args.out, args.overwrite, inputs={})
    res = merge_selections(args.files, sources=args.files)
    save_selection(res, out, overwrite=args.overwrite)
    print(f"merged {len(args.files)} rounds: {res.budget} labelled samples -> {out}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# demo
# ----------------------------------------------------------------------------------------------------------
def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out, budget=args.budget, seeds=args.seeds, methods=args.methods, pca=args.pca,
             data_root=args.data_root, overwrite=args.overwrite, progress=not args.quiet,
             max_samples=args.max_samples)
    return 0


# ----------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="uslkit", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"uslkit {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("datasets", help="list datasets, or check which are available locally")
    d.add_argument("name", nargs="?", help="one dataset (default: all but imagefolder, which needs --data-root)")
    d.add_argument("--check", action="store_true", help="try to load each and report what is missing")
    d.add_argument("--split", default="train")
    d.add_argument("--data-root", default="data", help="dataset folder (default: data)")
    d.add_argument("--download", action="store_true", help="with --check: download what is missing (torchvision)")
    d.set_defaults(func=_cmd_datasets)

    from .demo import DEFAULT_METHODS
    from .embed import ENCODERS
    from .select import METHODS

    e = sub.add_parser("embed", help="compute (or reuse cached) L2-normalised embeddings of a dataset",
                       description="Compute embeddings with a JSON sidecar; a matching file is reused, "
                                   "a mismatching one is an error unless --overwrite.")
    e.add_argument("--dataset", required=True, help="e.g. fashion_mnist, digits, cifar10, imagefolder")
    e.add_argument("--split", default="train")
    e.add_argument("--encoder", default="pixels", help=f"one of {', '.join(ENCODERS)}, or ckpt:<path> (a kit "
                   "checkpoint, e.g. the model.pt of `uslkit train simclr`)")
    e.add_argument("--pca", type=int, default=None, help="project to this many dims (fitted on train)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", default=None, help="output .npy (default: the cache under --cache-dir)")
    e.add_argument("--cache-dir", default="data/embeddings")
    e.add_argument("--overwrite", action="store_true", help="replace --out if it does not match")
    e.add_argument("--weights", default="imagenet", help="network weights: imagenet | none | a torchvision name")
    e.add_argument("--image-size", type=int, default=None, help="network input size (default 224)")
    e.add_argument("--features", choices=("backbone", "head"), default="backbone",
                   help="ckpt:<path> encoders: the backbone's pooled features (default) or the projection head's "
                        "output (what USL selects on)")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if present)")
    e.add_argument("--data-root", default="data")
    e.add_argument("--download", action="store_true", help="download the dataset if it is not found")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_cmd_embed)

    s = sub.add_parser("select", help="choose samples to label and write the labels file (JSON)",
                       description="Run a selection method on embeddings and write a uslkit labels file.")
    s.add_argument("--emb", required=True, help="embeddings .npy (with its JSON sidecar from `uslkit embed`)")
    s.add_argument("--budget", type=int, required=True)
    s.add_argument("--method", default="usl", help=f"selection method: {', '.join(METHODS)} (default usl), or usl_t "
                   "(trains on the images from --init: uslkit.select.select_usl_t)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="labels file to write (.json)")
    s.add_argument("--labeled", default=None, help="already-labelled samples: labels .json, index .npy or .txt")
    s.add_argument("--param", type=parse_param, action="append", metavar="KEY=VALUE",
                   help="method parameter, repeatable (e.g. --param k=20 --param lam=0.5; usl_t: USLTConfig fields, "
                   "head, batched_augment and run settings other than seed and out_dir, e.g. --param steps=500)")
    s.add_argument("--init", default=None, help="usl_t: encoder checkpoint (model.pt of a SimCLR run)")
    s.add_argument("--preset", default=None, help="usl_t: cifar | imagenet | cpu (uslkit.train.USLTConfig.PRESETS)")
    s.add_argument("--run-dir", default=None, help="usl_t: run folder (checkpointed and resumable: rerun the same "
                   "command after a kill; holds probs.npy, history.json); default: --out without its suffix + "
                   "'_run' (sel.json -> sel_run/)")
    s.add_argument("--dataset", default=None, help="dataset name (default: from the embedding sidecar)")
    s.add_argument("--split", default=None)
    s.add_argument("--data-root", default="data")
    s.add_argument("--no-dataset", action="store_true", help="do not load the dataset (ids = row indices)")
    s.add_argument("--annotate", action="store_true", help="fill labels from ground truth (simulated oracle)")
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    s.set_defaults(func=_cmd_select)

    t = sub.add_parser("train", help="train SimCLR, FixMatch or a fine-tuned classifier (resumable; torchrun)",
                       add_help=False,
                       description="Train a network. The run folder (--out) holds config.json, state.pt "
                                   "(resumable: rerun the same command after a kill), history.json, model.pt "
                                   "and results.json. Multi-GPU/CPU: torchrun --nproc_per_node=N -m uslkit "
                                   "train ...")
    t.add_argument("-h", "--help", action=_TrainHelp, help="show this help (after LEARNER: also its options, "
                   "defaults and presets) and exit")
    t.add_argument("learner", help="simclr | moco | msf | cmsf | sela | fixmatch | mixmatch | comatch | finetune "
                   "(uslkit.train.registry.LEARNERS)")
    t.add_argument("--dataset", required=True)
    t.add_argument("--split", default="train")
    t.add_argument("--test-split", default="test", help="labelled split evaluated during/after training ('' = none)")
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--labels", default=None, help="annotated labels file (fixmatch, mixmatch, comatch, "
                   "finetune; cmsf with --param constraint=labels)")
    t.add_argument("--init", default=None, help="pretrained checkpoint (model.pt of a SimCLR run)")
    t.add_argument("--preset", default=None,
                   help="simclr: paper | cpu; moco: paper | cifar | cpu; msf: paper | cpu; cmsf: paper | cpu | "
                   "cpu-labels; sela: cifar | imagenet | cpu; fixmatch: paper | usl | cpu; mixmatch: paper | cpu; "
                   "comatch: paper | cpu; finetune: paper (uslkit.train.<Learner>Config.PRESETS); every option "
                   "given here overrides the preset's value")
    t.add_argument("--arch", default=None, help="cnn_small | resnet18_cifar | wrn28_2 | resnet50 (default: the "
                   "config's, cnn_small)")
    t.add_argument("--mode", default=None, choices=["linear", "full"], help="finetune: frozen backbone or all")
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--epochs", type=float, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None)
    t.add_argument("--num-workers", type=int, default=0)
    t.add_argument("--ckpt-every", type=int, default=None, help="steps between checkpoints (default 500)")
    t.add_argument("--ckpt-minutes", type=float, default=None, help="also checkpoint every this many minutes of "
                   "wall time (default 2); Ctrl-C / SIGTERM always saves one before stopping")
    t.add_argument("--log-every", type=int, default=None)
    t.add_argument("--eval-every", type=int, default=None)
    t.add_argument("--param", type=parse_param, action="append", metavar="KEY=VALUE",
                   help="any other config field or keyword of the learner, repeatable (--param lr=0.05 --param mu=4)")
    t.add_argument("--data-root", default="data")
    t.add_argument("--download", action="store_true")
    t.add_argument("--overwrite", action="store_true", help="discard a different run in --out")
    t.add_argument("-q", "--quiet", action="store_true")
    t.set_defaults(func=_cmd_train)

    lab = sub.add_parser("labels", help="hand picks to a person and bring the labels back: export, import, merge",
                         description="The labelling round trip: `export` the picked images with a manifest to fill "
                                     "(and a Label Studio project), `import` the filled manifest or Label Studio's "
                                     "JSON export into a labels file, `merge` the labels files of several rounds.")
    lsub = lab.add_subparsers(dest="labels_command", metavar="ACTION", required=True)
    ex = lsub.add_parser("export", help="write the picks as images + manifest.csv + contact sheet + Label Studio "
                         "tasks")
    ex.add_argument("selection", help="labels file (.json) from `uslkit select`")
    ex.add_argument("--to", required=True, help="export folder (a repeated export of the same selection is kept)")
    ex.add_argument("--dataset", default=None, help="dataset the selection was made on (default: the file's)")
    ex.add_argument("--split", default=None, help="default: the file's")
    ex.add_argument("--data-root", default="data")
    ex.add_argument("--classes", default=None, help="comma-separated class names (default: the dataset's)")
    ex.add_argument("--document-root", default=None, help="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT "
                    "(task URLs are relative to it; default: the export folder)")
    ex.add_argument("--overwrite", action="store_true", help="replace an export of another selection in --to")
    ex.set_defaults(func=_cmd_labels_export)
    im = lsub.add_parser("import", help="read a filled manifest.csv or a Label Studio JSON export")
    im.add_argument("file", help="manifest.csv (label column: class name or 0-based index) or Label Studio "
                    "export (.json, JSON or JSON-MIN)")
    im.add_argument("--into", required=True, help="the labels file the export was made from")
    im.add_argument("--out", required=True, help="annotated labels file to write (.json)")
    im.add_argument("--classes", default=None, help="comma-separated class names (default: the selection's or "
                    "the export folder's export.json)")
    im.add_argument("--dataset", default=None, help="take the class names from this dataset")
    im.add_argument("--data-root", default="data")
    im.add_argument("--allow-partial", action="store_true", help="keep only the labelled picks when some have "
                    "no label")
    im.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    im.set_defaults(func=_cmd_labels_import)
    mg = lsub.add_parser("merge", help="join the labels files of several rounds into one")
    mg.add_argument("files", nargs="+", help="annotated labels files, earliest round first")
    mg.add_argument("--out", required=True)
    mg.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    mg.set_defaults(func=_cmd_labels_merge)

    from .active import STRATEGIES
    from .active.head import HeadConfig

    a = sub.add_parser("active", help="multi-round active learning on embeddings with the simulated oracle",
                       description="Rounds of: train a head on the labels so far, score it on the test set, query "
                       "the next batch with a strategy. The run folder (--out) holds one labels file per round "
                       "and rounds.json; rerun the same command to resume a stopped run.")
    a.add_argument("--emb", required=True, help="pool embeddings .npy (with its sidecar: the dataset is the oracle)")
    a.add_argument("--test-emb", default=None, help="test-split embeddings .npy of the same encoder (accuracy per "
                   "round); without it only coverage and balance are recorded")
    a.add_argument("--strategy", required=True, help=f"query strategy: {', '.join(STRATEGIES)}")
    a.add_argument("--start", default="random", help=f"one-shot method of the first round: {', '.join(METHODS)}")
    a.add_argument("--labels", default=None, help="start from this annotated labels file instead (e.g. one a person "
                   "filled in with `uslkit labels import`); its labels are used, the first round is its size")
    a.add_argument("--schedule", type=int, nargs="+", default=None, metavar="LABELS",
                   help="labelled-set size per round, increasing (e.g. 20 40 60 80 100)")
    a.add_argument("--max-labels", type=int, default=None, help="instead of --schedule: paper 003's steps (20 at a "
                   "time to 100, then 100 to 500, then 500) up to this many labels")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--head-preset", default=None, help=f"head config preset: {' | '.join(HeadConfig.PRESETS)} "
                   "(default: HeadConfig's defaults, paper 003's MLP)")
    a.add_argument("--head-param", type=parse_param, action="append", metavar="KEY=VALUE",
                   help="a HeadConfig field, repeatable (e.g. --head-param hidden=128 --head-param epochs=50)")
    a.add_argument("--finetune", default=None, metavar="MODEL.pt", help="instead of the head on the embeddings, "
                   "fine-tune this kit checkpoint on the labelled images each round (SimCLRv2-CLD's linear protocol; "
                   "scored on the dataset's test split when --test-emb is given)")
    a.add_argument("--finetune-param", type=parse_param, action="append", metavar="KEY=VALUE",
                   help="a FinetuneConfig field for --finetune, repeatable (e.g. mode=full, epochs=2)")
    a.add_argument("--param", type=parse_param, action="append", metavar="KEY=VALUE",
                   help="a strategy option, repeatable")
    a.add_argument("--start-param", type=parse_param, action="append", metavar="KEY=VALUE",
                   help="an option of the --start method, repeatable")
    a.add_argument("--out", required=True, help="run folder (created; resumable)")
    a.add_argument("--data-root", default="data")
    a.add_argument("--overwrite", action="store_true", help="replace a run with other parameters in --out")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=_cmd_active)

    m = sub.add_parser("demo", help="the main job: Fashion-MNIST embeddings, selection, evaluation, plots",
                       description="Run the end-to-end demo on Fashion-MNIST (offline) and write a results "
                                   "table and figures.")
    m.add_argument("--out", default="papermill_runs/demo")
    m.add_argument("--budget", type=int, default=40)
    m.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    m.add_argument("--methods", nargs="+", default=None, help=f"default: {' '.join(DEFAULT_METHODS)}")
    m.add_argument("--pca", type=int, default=64)
    m.add_argument("--max-samples", type=int, default=None, help="use only the first N training samples")
    m.add_argument("--data-root", default="data")
    m.add_argument("--overwrite", action="store_true", help="replace an existing demo folder's results")
    m.add_argument("-q", "--quiet", action="store_true")
    m.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from .embed import WeightsUnavailableError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as e:  # Ctrl-C: one line, not a traceback (a training run saved a checkpoint)
        print(f"uslkit: {e or 'interrupted'}", file=sys.stderr)
        return 130
    except (CLIError, ValueError, FileExistsError, FileNotFoundError, NotImplementedError, ImportError,
            WeightsUnavailableError, IsADirectoryError) as e:
        print(f"uslkit: error: {cli_terms(str(e))}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
