"""Benchmark: the training core on Fashion-MNIST (CPU scale), and the same script at paper scale on a GPU.

Stages (each resumable: every training run keeps its checkpoint folder under ``--work``, every finished
measurement is written to the results JSON at once; rerun the same command after an interruption):

``tune``: short SimCLR runs, one per ``--config``, to choose the setting of the ``simclr`` stage (temperature,
  crop scale, ...): full-label 1-NN and USL 1-NN (budgets 20 / 40, 2 selection seeds) of each.
``simclr``: SimCLR (:func:`uslkit.train.train_simclr`) on the 60,000 training images, then
  - full-label 1-NN test accuracy (cosine) of its embedding against the 64-d PCA pixel embedding;
  - label efficiency of USL selections on it vs on PCA at budgets 20 and 40, 5 seeds: 1-NN test accuracy
    of a classifier fitted on the labelled picks only (the selection and the 1-NN use the same embedding).
``diagnose``: where a USL gap between the SimCLR encoder and PCA comes from (picks made on one embedding and
  classified on the other; USL variants on each; the density scale that USL's ``lam`` is relative to).
``plateau``: where FixMatch stalls: for every recorded FixMatch run, its final EMA model's pseudo-labels on
  the training pool (share confident, accuracy of the confident ones, the class it over-predicts) against the
  class histogram of its 40 labelled picks. No training; reads the run folders.
``cost``: what a larger network would cost here: forward + backward time of one batch of the dataset's image
  size for each architecture of ``--cost-archs``, median of repeats, and its ratio to the small CNN (same run).
``fixmatch``: FixMatch with 40 labels, selections by USL (on the SimCLR embedding), random and stratified
  (oracle), 3 seeds each, equal compute (the same number of steps; ``--minutes`` per run chooses it from a
  timed calibration), initialised from the SimCLR encoder; mean and spread of top-1 (model and EMA).

    python benchmarks/bench_train_fmnist.py tune --steps 470 --config '{"temperature": 0.1}' --config '{}'
    python benchmarks/bench_train_fmnist.py simclr --epochs 12 --param temperature=0.1 --param crop_scale=[0.5,1.0]
    python benchmarks/bench_train_fmnist.py fixmatch --minutes 30
    python benchmarks/bench_train_fmnist.py diagnose        # USL on SimCLR vs PCA: where a gap comes from
    python benchmarks/bench_train_fmnist.py plateau         # FixMatch runs: confident-wrong pseudo-labels
    python benchmarks/bench_train_fmnist.py cost            # step cost of WRN-28-2 / ResNet-18 vs the small CNN
    python benchmarks/bench_train_fmnist.py report          # re-render RESULTS.md from the JSON
    python benchmarks/bench_train_fmnist.py simclr --quick   # seconds: every code path on 2,000 images

Paper scale on a GPU, parameters only (Sohn et al. 2020 and Wang, Lian & Yu 2022: FixMatch CIFAR-10, 40 labels,
WRN-28-2, 2^20 steps; paper numbers random 82.9, stratified 88.6, USL 90.4, USL-T 93.5)::

    python benchmarks/bench_train_fmnist.py fixmatch --dataset cifar10 --arch wrn28_2 --steps 1048576 \\
        --no-init --selection-embedding pixels
    # or one run: uslkit train fixmatch --dataset cifar10 --labels sel.json --preset paper --out runs/fm
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine, update_section

from uslkit import _io
from uslkit.cli import parse_param

HERE = Path(__file__).resolve().parent
SECTION = "Training: Fashion-MNIST"
PCA_DIM = 64
BUDGETS_SSL = (20, 40)
SEEDS_SSL = (0, 1, 2, 3, 4)
FIX_METHODS = ("usl", "random", "stratified")
FIX_SEEDS = (0, 1, 2)
FIX_BUDGET = 40
QUICK = dict(n_train=2000, n_test=500, simclr_steps=4, fix_steps=4, batch_size=64)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load(args):
    from uslkit.data import load_dataset

    train = load_dataset(args.dataset, "train", root=args.data_root)
    test = load_dataset(args.dataset, "test", root=args.data_root)
    if args.quick:
        rng = np.random.default_rng(0)
        train = train.subset(np.sort(rng.choice(len(train), QUICK["n_train"], replace=False)))
        test = test.subset(np.sort(rng.choice(len(test), QUICK["n_test"], replace=False)))
    return train, test


def pca_embeddings(train, test):
    from uslkit.embed import embed_dataset, l2_normalize

    x_tr = embed_dataset(train, "pixels", pca=PCA_DIM, progress=False)
    x_te = embed_dataset(test, "pixels", pca=PCA_DIM, progress=False, pca_fit=train)
    return l2_normalize(x_tr), l2_normalize(x_te)


def simclr_embeddings(net, train, test, *, progress=True):
    """L2-normalised encoder features of the train and test splits."""
    from uslkit.embed import l2_normalize
    from uslkit.evaluate import extract_features

    return (l2_normalize(extract_features(net, train, progress=progress)),
            l2_normalize(extract_features(net, test, progress=progress)))


def usl_nn1(x_tr, y_tr, x_te, y_te, budget, seed):
    from uslkit.evaluate import class_coverage, nn_accuracy
    from uslkit.select import select

    t0 = time.perf_counter()
    idx = select("usl", x_tr, budget, seed=seed)
    return {"nn1": nn_accuracy(x_tr[idx], y_tr[idx], x_te, y_te), "coverage": class_coverage(y_tr[idx], 10),
            "select_s": time.perf_counter() - t0, "indices": idx.tolist()}


def stage_simclr(args, res):
    from uslkit.evaluate import nn_accuracy
    from uslkit.train import train_simclr

    train, test = load(args)
    length = dict(steps=QUICK["simclr_steps"]) if args.quick else (
        dict(steps=args.steps) if args.steps else dict(epochs=args.epochs))
    tag = f"steps{length['steps']}" if "steps" in length else f"epochs{length['epochs']:g}"
    params = dict(args.param or [])
    if args.batch_size != 256 and not args.quick:
        tag += f"_batch{args.batch_size}"
    run_dir = Path(args.work) / f"simclr_{args.arch}_seed{args.seed}_{tag}{param_tag(params)}"
    t0 = time.perf_counter()
    out = train_simclr(train, arch=args.arch, batch_size=QUICK["batch_size"] if args.quick else args.batch_size,
                       seed=args.seed, out_dir=run_dir, progress=True, log_every=10 if args.quick else 50,
                       ckpt_every=200, **length, **params)
    train_s = time.perf_counter() - t0
    e_tr, e_te = simclr_embeddings(out.net, train, test)
    p_tr, p_te = pca_embeddings(train, test)
    y_tr, y_te = train.labels, test.labels
    old = res.get("simclr_runs", {}).get(run_dir.name, {})
    entry = {
        "run_dir": str(run_dir), "steps": out.step, "params": params,
        "batch_size": QUICK["batch_size"] if args.quick else args.batch_size,
        "train_wall_s": old.get("train_wall_s") if out.reused else train_s,
        "history_tail": out.history[-3:], "images": len(train),
        "full_label_nn1": {"simclr": nn_accuracy(e_tr, y_tr, e_te, y_te), "pca": nn_accuracy(p_tr, y_tr, p_te, y_te)},
        "usl": {},
    }
    for budget in BUDGETS_SSL:
        for seed in SEEDS_SSL[:2] if args.quick else SEEDS_SSL:
            for name, (a, b) in (("simclr", (e_tr, e_te)), ("pca", (p_tr, p_te))):
                r = usl_nn1(a, y_tr, b, y_te, budget, seed)
                entry["usl"].setdefault(f"{name}/{budget}", []).append({"seed": seed, **r})
                log(f"usl {name} budget {budget} seed {seed}: 1-NN {r['nn1']:.4f} coverage {r['coverage']:.0%}")
    res.setdefault("simclr_runs", {})[run_dir.name] = entry
    res["simclr"] = entry  # the encoder the fixmatch stage starts from: the last one trained
    return res


def param_tag(params: dict) -> str:
    """``--param`` values as a run-folder suffix: ``_crop_scale0.5-1.0_temperature0.2`` (sorted by key)."""
    def text(v):
        return "-".join(text(x) for x in v) if isinstance(v, (list, tuple)) else str(v)

    return "".join(f"_{k}{text(v)}" for k, v in sorted(params.items()))


def stage_tune(args, res):
    """Short SimCLR runs, one per ``--config`` (JSON keywords of train_simclr), to choose the CPU setting:
    full-label 1-NN and USL 1-NN at budgets 20 / 40 (selection seeds 0 and 1) of each encoder."""
    import json

    from uslkit.evaluate import nn_accuracy
    from uslkit.train import train_simclr

    train, test = load(args)
    steps = QUICK["simclr_steps"] if args.quick else (args.steps or 470)
    tuning = res.setdefault("simclr_tuning", {})
    for text in args.config or ["{}"]:
        params = json.loads(text)
        name = f"steps{steps}{param_tag(params)}"
        if name in tuning:
            continue
        run_dir = Path(args.work) / f"simclr_tune_{args.arch}_seed{args.seed}_{name}"
        t0 = time.perf_counter()
        out = train_simclr(train, arch=args.arch, steps=steps, seed=args.seed, out_dir=run_dir, progress=True,
                           batch_size=QUICK["batch_size"] if args.quick else args.batch_size, ckpt_every=200,
                           **params)
        e_tr, e_te = simclr_embeddings(out.net, train, test)
        entry = {"params": params, "steps": steps, "run_dir": str(run_dir), "loss": out.history[-1]["loss"],
                 "train_wall_s": None if out.reused else time.perf_counter() - t0,
                 "full_label_nn1": nn_accuracy(e_tr, train.labels, e_te, test.labels)}
        for budget in BUDGETS_SSL:
            entry[f"usl{budget}"] = [usl_nn1(e_tr, train.labels, e_te, test.labels, budget, seed)["nn1"]
                                     for seed in (0, 1)]
        tuning[name] = entry
        log(f"tune {name}: full-label 1-NN {entry['full_label_nn1']:.4f}, USL b=20 {entry['usl20']}")
        save(args, res)
    return res


#: USL variants of the ``diagnose`` stage: (name, method, keywords); the first is the default USL of the
#: ``simclr`` stage, whose picks are reused from its record.
DIAG_VARIANTS = (("usl (default, lam 0.5)", "usl", {}), ("usl lam 0", "usl", {"lam": 0.0}),
                 ("usl lam 2", "usl", {"lam": 2.0}), ("kmeans closest-to-centre", "kmeans", {}))


def stage_diagnose(args, res):
    """Where the USL gap between the SimCLR encoder of the ``simclr`` stage (the one trained last,
    ``res["simclr"]``) and PCA comes from, at each budget of ``--budgets`` (default 20) over the simclr stage's
    selection seeds:

    - ``cross``: 1-NN test accuracy of the picks made on embedding A with the classifier on embedding B, for
      A, B in {simclr, pca}: the selection's share of the gap against the classifier's (the ``simclr``
      stage's picks, reused);
    - ``variants``: :data:`DIAG_VARIANTS` on each embedding (USL's ``lam`` is relative to the density scale,
      ``1 / mean kNN distance``, which differs between embeddings; K-means closest-to-centre has no ``lam``);
    - ``density``: median and 10/90th percentiles of the USL density (k = 400) of each embedding.

    Finished parts are kept and skipped on a rerun only while the encoder (run folder and steps) and the
    picks they were computed from are the same (:func:`diagnosis_record`); otherwise they are recomputed.
    Diagnostic only: choosing a variant by these test accuracies would tune the selection on the test set."""
    from uslkit.evaluate import nn_accuracy
    from uslkit.knn import knn_density
    from uslkit.select import select
    from uslkit.train.models import load_model

    ssl = res.get("simclr")
    if not ssl:
        raise SystemExit("run the simclr stage first: the diagnosis is of its encoder and its USL picks")
    missing = [b for b in args.budgets if not (ssl["usl"].get(f"simclr/{b}") and ssl["usl"].get(f"pca/{b}"))]
    if missing:
        raise SystemExit(f"the simclr stage has no USL picks at budget(s) {missing} (it ran {BUDGETS_SSL})")
    train, test = load(args)
    y_tr, y_te = train.labels, test.labels
    emb = {"simclr": simclr_embeddings(load_model(Path(ssl["run_dir"]) / "model.pt"), train, test),
           "pca": pca_embeddings(train, test)}
    k = min(400, len(train) - 1)
    diag = diagnosis_record(res, ssl)
    for name, (x_tr, _) in emb.items():
        if name not in diag["density"]:
            u = knn_density(x_tr, k)
            diag["density"][name] = {"k": k, "median": float(np.median(u)),
                                     "p10": float(np.percentile(u, 10)), "p90": float(np.percentile(u, 90))}
    for budget in args.budgets:
        diag, rec, picks = diagnosis_record(res, ssl, budget)
        seeds = rec["seeds"]
        for a in emb:
            for b, (x_tr, x_te) in emb.items():
                rec["cross"][f"{a}->{b}"] = [nn_accuracy(x_tr[picks[a][s]], y_tr[picks[a][s]], x_te, y_te)
                                             for s in seeds]
        recorded = [r["nn1"] for r in ssl["usl"][f"simclr/{budget}"] if r["seed"] in seeds]
        if not np.allclose(rec["cross"]["simclr->simclr"], recorded):
            log(f"warning: the SimCLR embedding recomputed here gives 1-NN {rec['cross']['simclr->simclr']} on "
                f"the recorded picks, the simclr stage recorded {recorded}")
        save(args, res)
        for e, (x_tr, x_te) in emb.items():
            for vname, method, kw in DIAG_VARIANTS:
                key = f"{e}/{vname}"
                if key in rec["variants"]:
                    continue
                idx = {s: picks[e][s] if not kw and method == "usl" else select(method, x_tr, budget, seed=s, **kw)
                       for s in seeds}
                rec["variants"][key] = [nn_accuracy(x_tr[idx[s]], y_tr[idx[s]], x_te, y_te) for s in seeds]
                log(f"diagnose b={budget} {key}: 1-NN {statistics.mean(rec['variants'][key]):.4f}")
                save(args, res)
    return res


def stage_plateau(args, res):
    """For every recorded FixMatch run whose folder still holds its EMA model (``model_ema.pt``, the model
    FixMatch evaluates), record ``run["pool"]``: the model's predictions on the clean training pool, i.e. the
    pseudo-labels it would give at FixMatch's threshold (``params["threshold"]``, default 0.95):

    - ``acc``: accuracy on the pool; ``confident``: share at or above the threshold; ``confident_acc``: the
      accuracy of those; ``confident_wrong``: the share of the pool confident AND wrong (what the unlabelled
      loss keeps training on);
    - ``pred_share`` / ``true_share`` per class, ``picks`` per class (the run's labelled set, from its
      ``config.json``), and ``over``: the class whose predicted share exceeds its true share the most
      (:func:`uslkit.evaluate.pseudo_label_stats`).

    The model is checked first: its test accuracy must reproduce the record's EMA top-1 (within 2 test
    images), else the run is skipped with a warning (the folder holds another run). A record is kept while the
    model file's sha256 is unchanged. The pool's labels are used for this measurement only (a benchmark
    dataset used as if unlabelled)."""
    from uslkit.evaluate import evaluate_classifier, predict, pseudo_label_stats
    from uslkit.train.models import load_model

    train, test = load(args)
    y_tr, n_test = train.labels, len(test)
    names = list(getattr(train, "class_names", None) or range(train.num_classes))
    for fx in res.get("fixmatch_sets", []):
        thr = float((fx.get("params") or {}).get("threshold", 0.95))
        for key, run in fx.get("runs", {}).items():
            folder = Path(run.get("run_dir", ""))
            path = folder / "model_ema.pt"
            if "ema_top1" not in run or not path.is_file():
                continue
            digest = _io.file_sha256(path)
            if (run.get("pool") or {}).get("model_sha256") == digest:
                continue
            net = load_model(path)
            test_acc = evaluate_classifier(net, test)["top1"]  # as the record's ema_top1 was measured
            if abs(test_acc - run["ema_top1"]) > 2 / n_test:
                log(f"warning: {folder} holds an EMA model of test accuracy {test_acc:.4f}, the record says "
                    f"{run['ema_top1']:.4f}; skipped")
                continue
            picked = _io.read_json(folder / "config.json")["params"]["labels"]
            run["pool"] = pseudo_label_stats(predict(net, train), y_tr, threshold=thr, picked_labels=picked,
                                             class_names=names)
            run["pool"]["model_sha256"] = digest
            log(f"plateau {Path(fx.get('init') or 'scratch').parent.name} {fx.get('steps')} {key}: "
                f"pool acc {run['pool']['acc']:.4f}, confident {run['pool']['confident']:.3f}, "
                f"confident & wrong {run['pool']['confident_wrong']:.3f}")
            save(args, res)
    return res


def stage_cost(args, res):
    """Forward + backward + SGD step time of one batch of ``--cost-batch`` random images of the dataset's shape
    for each architecture of ``--cost-archs``: ``--cost-repeats`` rounds over the architectures (interleaved, so
    load changes hit all alike), 3 timed steps each after 1 warm-up; median, and its ratio to the first
    architecture."""
    import torch

    from uslkit.train.batches import image_channels
    from uslkit.train.models import build_model

    train, _ = load(args)
    shape = (image_channels(train), *train.images.shape[1:3])
    x = torch.randn(args.cost_batch, *shape)
    y = torch.randint(0, train.num_classes, (args.cost_batch,))
    times: dict[str, list[float]] = {a: [] for a in args.cost_archs}
    for _ in range(args.cost_repeats):
        for arch in args.cost_archs:
            net = build_model(arch, train.num_classes, in_channels=shape[0], seed=0).train()
            opt = torch.optim.SGD(net.parameters(), lr=0.01)
            for i in range(4):
                t0 = time.perf_counter()
                loss = torch.nn.functional.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if i:
                    times[arch].append(time.perf_counter() - t0)
    base = statistics.median(times[args.cost_archs[0]])
    res["cost"] = {"batch": args.cost_batch, "shape": list(shape), "threads": torch.get_num_threads(),
                   "archs": {a: {"median_s": statistics.median(t), "ratio": statistics.median(t) / base, "n": len(t)}
                             for a, t in times.items()}}
    for a, c in res["cost"]["archs"].items():
        log(f"cost {a}: {c['median_s']:.3f} s per batch of {args.cost_batch}, x{c['ratio']:.1f}")
    return res


def _cost_md(cost) -> list[str]:
    archs = cost["archs"]
    first = next(iter(archs))
    return ["### Cost of a larger network", "",
            f"Command: `python benchmarks/bench_train_fmnist.py cost`. Forward + backward + SGD step of one batch "
            f"of {cost['batch']} random images of shape {tuple(cost['shape'])}, {cost['threads']} torch "
            f"thread(s), median of {next(iter(archs.values()))['n']} steps per architecture (interleaved "
            f"rounds).", "",
            f"| architecture | s per batch | x {first} |", "|---|---|---|",
            *[f"| {a} | {c['median_s']:.3f} | {c['ratio']:.1f} |" for a, c in archs.items()], ""]


def diagnosis_record(res, ssl, budget=None):
    """The ``diagnose`` record of the encoder ``ssl`` (an entry of the simclr stage), emptied when it was
    computed from another encoder (run folder or steps); with ``budget``: ``(diag, rec, picks)``, ``rec``
    emptied when it was computed from other picks or seeds, ``picks[embedding][seed]`` the simclr stage's USL
    picks at that budget."""
    from uslkit.notebook import params_hash

    encoder = {"run_dir": ssl["run_dir"], "steps": ssl["steps"]}
    diag = res.setdefault("usl_diagnosis", {}).setdefault(Path(ssl["run_dir"]).name, {})
    if diag.get("encoder") != encoder:
        diag.clear()
        diag.update(encoder=encoder, density={})
    if budget is None:
        return diag
    picks = {e: {r["seed"]: r["indices"] for r in ssl["usl"].get(f"{e}/{budget}", [])} for e in ("simclr", "pca")}
    seeds = sorted(set(picks["simclr"]) & set(picks["pca"]))
    digest = params_hash({e: [picks[e][s] for s in seeds] for e in picks})
    rec = diag.get(str(budget))
    if not rec or rec.get("picks_hash") != digest or rec.get("seeds") != seeds:
        rec = diag[str(budget)] = {"seeds": seeds, "picks_hash": digest, "cross": {}, "variants": {}}
    return diag, rec, picks


def calibrate_steps(args, train, sel, init, minutes) -> int:
    from uslkit.train import train_fixmatch

    t0 = time.perf_counter()
    probe = 10
    train_fixmatch(train, sel, arch=args.arch, init=init, steps=probe, seed=0, progress=False,
                   **dict(args.param or []))
    per = (time.perf_counter() - t0) / probe
    steps = max(1, int(minutes * 60 / per))
    log(f"calibration: {per:.3f} s/step -> {steps} steps for {minutes} min")
    return steps


def stage_fixmatch(args, res):
    train, test = load(args)
    init = None
    if not args.no_init:
        ssl = res.get("simclr")
        if not ssl:
            raise SystemExit("run the simclr stage first (its encoder initialises FixMatch), or pass --no-init")
        init = Path(ssl["run_dir"]) / "model.pt"
    if args.selection_embedding == "simclr" and init is not None:
        from uslkit.train.models import load_model

        emb, _ = simclr_embeddings(load_model(init), train, test)
    else:
        emb, _ = pca_embeddings(train, test)
    steps = QUICK["fix_steps"] if args.quick else args.steps
    params = dict(args.param or [])
    fx = fixmatch_set(res, None if init is None else str(init), params, steps)
    fixmatch_runs(args, fx, train, test, emb, init, params=params, save=lambda: save(args, res))
    return res


def fixmatch_runs(args, fx, train, test, emb, init, *, params, save) -> None:
    """Train the missing FixMatch runs of the set ``fx``: ``args.methods`` pick ``FIX_BUDGET`` labels on ``emb``
    at each of ``args.seeds``; every run from ``init`` (``None``: scratch) for ``fx["steps"]`` steps (``None``:
    calibrated from ``args.minutes``), ``params`` on top of the learner's preset; ``save()`` after each run."""
    from uslkit.labels import annotate, make_selection
    from uslkit.select import select
    from uslkit.train import train_fixmatch

    steps = fx.get("steps")
    for seed in args.seeds:  # seed-major: an interrupted benchmark has every method at the first seeds
        for method in args.methods:
            key = f"{method}/seed{seed}"
            if key in fx["runs"] and "top1" in fx["runs"][key]:
                continue
            idx = select(method, emb, FIX_BUDGET, seed=seed, labels=train.labels)
            sel = annotate(make_selection(idx, dataset=train, method=method, seed=seed), train)
            if steps is None:
                steps = calibrate_steps(args, train, sel, init, args.minutes)
            fx["steps"] = steps
            tag = param_tag(params)
            origin = f"_from-{Path(init).parent.name}" if init is not None else "_scratch"
            run_dir = Path(args.work) / f"fixmatch_{args.arch}_{method}_seed{seed}_{steps}{tag}{origin}"
            t0 = time.perf_counter()
            out = train_fixmatch(train, sel, arch=args.arch, init=init, steps=steps, seed=seed, test_set=test,
                                 out_dir=run_dir, progress=True, eval_every=max(1, steps // 5), ckpt_every=100,
                                 **params)
            fx["runs"][key] = {"method": method, "seed": seed, "steps": steps, "run_dir": str(run_dir),
                               "wall_s": None if out.reused else time.perf_counter() - t0,
                               "top1": out.metrics["top1"], "ema_top1": out.metrics["ema_top1"],
                               "per_class_ema": out.metrics.get("ema_per_class"), "curve": _curve(out.history),
                               "coverage": len(set(sel.labels)) / train.num_classes}
            log(f"fixmatch {key}: top1 {out.metrics['top1']:.4f} ema {out.metrics['ema_top1']:.4f}")
            save()


def fixmatch_set(res, init, params, steps) -> dict:
    """The record of FixMatch runs sharing ``init``, ``params`` and ``steps`` (``None``: any calibrated
    length), created when new: each such set is one equal-compute comparison and one table."""
    sets = res.setdefault("fixmatch_sets", [])
    for fx in sets:
        if fx.get("init") == init and fx.get("params") == params and (steps is None or fx.get("steps") == steps):
            return fx
    fx = {"init": init, "params": params, "steps": steps, "runs": {}}
    sets.append(fx)
    return fx


def migrate(res) -> dict:
    """Results written before SimCLR runs were kept side by side and FixMatch runs grouped into sets."""
    if "simclr" in res and "simclr_runs" not in res:
        res["simclr_runs"] = {Path(res["simclr"]["run_dir"]).name: res["simclr"]}
    if "fixmatch" in res:
        fx = res.pop("fixmatch")
        if "init" not in fx and "simclr" in res:
            fx["init"] = str(Path(res["simclr"]["run_dir"]) / "model.pt")
        res.setdefault("fixmatch_sets", []).insert(0, fx)
    for fx in res.get("fixmatch_sets", []):  # runs recorded before the EMA curve was: read it from the run folder
        for run in fx.get("runs", {}).values():
            hist = Path(run.get("run_dir", "")) / "history.json"
            if "curve" not in run and run.get("run_dir") and hist.is_file():
                curve = _curve(_io.read_json(hist))
                # only a history that ends where this record does (its steps and its final EMA accuracy)
                if curve and curve[-1][0] == run.get("steps") and abs(curve[-1][1] - run.get("ema_top1", -1)) < 1e-9:
                    run["curve"] = curve
    return res


def _curve(history) -> list[list[float]]:
    """``[step, EMA top-1]`` at each evaluation of a FixMatch history."""
    return [[h["step"], h["ema_top1"]] for h in history if h.get("ema_top1") is not None]


def _ms(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} +- {100 * sd:.1f} (n={len(values)})"


def markdown(res) -> str:
    m = res.get("machine", {})
    lines = [f"`benchmarks/bench_train_fmnist.py`; {m.get('cpu')}, {m.get('cpu_count')} cores, torch "
             f"{m.get('torch')}, CUDA {m.get('cuda')}; dataset {res.get('config', {}).get('dataset')}, "
             f"arch {res.get('config', {}).get('arch')}.", ""]
    runs = res.get("simclr_runs") or {}
    if runs:
        lines += ["### SimCLR embedding", "",
                  "One row per SimCLR run (`--param` values in the name; the last one trained initialises "
                  "FixMatch). USL b=20 / b=40: 1-NN test accuracy of the labelled picks, 5 selection seeds.", "",
                  "| embedding | steps | training wall min | full-label 1-NN | USL b=20 1-NN | USL b=40 1-NN |",
                  "|---|---|---|---|---|---|"]
        for name, ssl in runs.items():
            wall = ssl.get("train_wall_s")
            cells = [_ms([r["nn1"] for r in ssl["usl"].get(f"simclr/{b}", [])]) for b in BUDGETS_SSL]
            lines.append(f"| {name} | {ssl['steps']} | {'-' if wall is None else f'{wall / 60:.1f}'} | "
                         f"{100 * ssl['full_label_nn1']['simclr']:.1f} | {cells[0]} | {cells[1]} |")
        ssl = next(iter(runs.values()))
        cells = [_ms([r["nn1"] for r in ssl["usl"].get(f"pca/{b}", [])]) for b in BUDGETS_SSL]
        lines += [f"| pixels PCA-{PCA_DIM} | - | - | {100 * ssl['full_label_nn1']['pca']:.1f} | {cells[0]} | "
                  f"{cells[1]} |", ""]
        lines += [f"- {name}: " + "; ".join(_vs_pca(ssl, b) for b in BUDGETS_SSL) for name, ssl in runs.items()]
        lines += [f"- note: {res['simclr_note']}"] if res.get("simclr_note") else []
        lines.append("")
    tuning = res.get("simclr_tuning") or {}
    if tuning:
        lines += ["### SimCLR tuning: short runs", "",
                  "Each row: one SimCLR run of the given length from seed 0, then full-label 1-NN and USL 1-NN "
                  "(selection seeds 0 and 1, mean) on its embedding. Command: `python benchmarks/"
                  "bench_train_fmnist.py tune --steps 470 --config '{\"temperature\": 0.1}' ...`.", "",
                  "| parameters | steps | final loss | full-label 1-NN | USL b=20 1-NN | USL b=40 1-NN |",
                  "|---|---|---|---|---|---|"]
        for t in tuning.values():
            lines.append(f"| {t['params'] or 'defaults'} | {t['steps']} | {t['loss']:.3f} | "
                         f"{100 * t['full_label_nn1']:.1f} | {100 * statistics.mean(t['usl20']):.1f} | "
                         f"{100 * statistics.mean(t['usl40']):.1f} |")
        lines += ([""] + [f"- note: {res['tuning_note']}"] if res.get("tuning_note") else []) + [""]
    for enc, diag in (res.get("usl_diagnosis") or {}).items():
        lines += _diagnosis_md(enc, diag)
    if res.get("cost"):
        lines += _cost_md(res["cost"])
    for fx in res.get("fixmatch_sets", []):
        if not fx.get("runs"):
            continue
        init = fx.get("init")
        source = "from scratch" if not init else f"the SimCLR encoder `{init}` (label-free, shared by every run)"
        short = Path(init).parent.name if init else "none"
        lines += [f"### FixMatch, 40 labels, {fx.get('steps')} steps, init {short}",
                  "",
                  f"{fx.get('steps')} steps per run (equal compute), parameters {fx.get('params') or 'defaults'}; "
                  f"init: {source}.",
                  "", "| selection | top-1 | EMA top-1 | class coverage | wall min / run | seeds |",
                  "|---|---|---|---|---|---|"]
        for method in FIX_METHODS:
            mruns = [r for r in fx["runs"].values() if r["method"] == method]
            if mruns:
                walls = [r["wall_s"] / 60 for r in mruns if r.get("wall_s")]
                lines.append(f"| {method} | {_ms([r['top1'] for r in mruns])} | "
                             f"{_ms([r['ema_top1'] for r in mruns])} | {_ms([r['coverage'] for r in mruns])} | "
                             f"{statistics.median(walls) if walls else float('nan'):.1f} | "
                             f"{', '.join(str(r['seed']) for r in mruns)} |")
        lines += [""] + _fixmatch_targets(fx["runs"]) + _curves_md(fx["runs"])
        lines += ([f"- note: {fx['note']}"] if fx.get("note") else []) + [""]
        lines += _plateau_md(fx["runs"])
    return "\n".join(lines)


def _diagnosis_md(enc: str, diag: dict) -> list[str]:
    """The ``diagnose`` stage's tables for one encoder."""
    dens = diag.get("density", {})
    lines = [f"### USL on SimCLR vs PCA: diagnosis ({enc})", "",
             "Command: `python benchmarks/bench_train_fmnist.py diagnose [--budgets 20 40]` (after the simclr "
             "stage). 1-NN test accuracy of the labelled picks, mean +- std over the selection seeds. Diagnostic "
             "only: picking a variant by these numbers would tune the selection on the test set.", ""]
    if dens:
        lines += ["USL density `U = 1 / mean kNN distance` (its `lam` is relative to this scale): " + "; ".join(
            f"{e} median {d['median']:.2f} (p10 {d['p10']:.2f}, p90 {d['p90']:.2f}, k = {d['k']})"
            for e, d in dens.items()), ""]
    for budget, rec in diag.items():
        if not budget.isdigit():  # "encoder", "density", "note"
            continue
        lines += [f"Budget {budget}, seeds {rec.get('seeds')}: picks made on one embedding, 1-NN on the other "
                  "(rows: where USL selected; columns: where 1-NN classifies).", "",
                  "| USL picks on | 1-NN on SimCLR | 1-NN on PCA |", "|---|---|---|"]
        for a in ("simclr", "pca"):
            cross = rec.get("cross", {})
            lines.append(f"| {a} | {_ms(cross.get(f'{a}->simclr', []))} | {_ms(cross.get(f'{a}->pca', []))} |")
        lines += ["", "| selection (picks and 1-NN on the same embedding) | SimCLR | PCA |", "|---|---|---|"]
        for vname, _, _ in DIAG_VARIANTS:
            var = rec.get("variants", {})
            lines.append(f"| {vname} | {_ms(var.get(f'simclr/{vname}', []))} | {_ms(var.get(f'pca/{vname}', []))} |")
        lines.append("")
    return lines + ([f"- note: {diag['note']}", ""] if diag.get("note") else [])


def _plateau_md(runs) -> list[str]:
    """The ``plateau`` stage's table for one FixMatch set (runs with a ``pool`` record)."""
    rows = [r for m in FIX_METHODS for r in sorted(runs.values(), key=lambda r: r["seed"])
            if r["method"] == m and r.get("pool")]
    if not rows:
        return []
    thr = rows[0]["pool"]["threshold"]
    lines = [f"Pseudo-labels of the final EMA model on the 60,000 training images (`plateau` stage; threshold "
             f"{thr}): confident = max softmax >= threshold, the samples FixMatch's unlabelled loss trains on; "
             "over-predicted = the class whose predicted share exceeds its true share the most, with its share "
             "of the 40 picks.", "",
             "| selection | seed | EMA test top-1 | pool accuracy | confident | accuracy of confident | "
             "confident & wrong | over-predicted class: predicted / true share, picks |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p, o = r["pool"], r["pool"]["over"]
        acc_c = "-" if p["confident_acc"] is None else f"{100 * p['confident_acc']:.1f}"
        lines.append(f"| {r['method']} | {r['seed']} | {100 * r['ema_top1']:.1f} | {100 * p['acc']:.1f} | "
                     f"{100 * p['confident']:.1f} | {acc_c} | {100 * p['confident_wrong']:.1f} | "
                     f"{o['class']}: {100 * o['pred_share']:.1f} / {100 * o['true_share']:.1f} %, "
                     f"{o['picks']} of {sum(p['picks'])} |")
    return lines + [""]


def _vs_pca(ssl, budget) -> str:
    """The SimCLR target at one budget: USL 1-NN on the SimCLR embedding above the same on PCA (means)."""
    mean = {e: statistics.mean(r["nn1"] for r in ssl["usl"][f"{e}/{budget}"]) for e in ("simclr", "pca")
            if ssl["usl"].get(f"{e}/{budget}")}
    if len(mean) < 2:
        return f"b={budget}: not measured"
    gap = 100 * (mean["simclr"] - mean["pca"])
    return f"b={budget} SimCLR - PCA = {gap:+.1f} points ({'beats' if gap > 0 else 'does not beat'} PCA)"


def _curves_md(runs) -> list[str]:
    """One line per selection: EMA top-1 at each evaluation step, mean over its runs that recorded it (``n=``
    given where fewer than all of its runs did)."""
    out = []
    for method in FIX_METHODS:
        mruns = [r for r in runs.values() if r["method"] == method]
        by_step: dict[int, list[float]] = {}
        for r in mruns:
            for step, acc in r.get("curve") or []:
                by_step.setdefault(int(step), []).append(acc)
        if by_step:
            out.append(f"- EMA top-1 by step, {method}: " + ", ".join(
                f"{step}: {100 * statistics.mean(v):.1f}" + (f" (n={len(v)})" if len(v) < len(mruns) else "")
                for step, v in sorted(by_step.items())))
    return out


def _fixmatch_targets(runs) -> list[str]:
    """The issue's targets, computed from the recorded runs: USL >= random + 5 points, smaller spread, > 80 %."""
    out = []
    for key, name in (("ema_top1", "EMA top-1 (FixMatch's evaluation model)"), ("top1", "top-1")):
        by = {m: {r["seed"]: r[key] for r in runs.values() if r["method"] == m} for m in ("usl", "random")}
        if not by["usl"] or not by["random"]:
            continue
        u, r = list(by["usl"].values()), list(by["random"].values())
        sd = [statistics.stdev(v) if len(v) > 1 else float("nan") for v in (u, r)]
        paired = [100 * (by["usl"][s] - by["random"][s]) for s in sorted(set(by["usl"]) & set(by["random"]))]
        gap = 100 * (statistics.mean(u) - statistics.mean(r))
        spread = ("spread: needs 2+ seeds per selection" if len(u) < 2 or len(r) < 2 else
                  f"spread USL {100 * sd[0]:.1f} vs random {100 * sd[1]:.1f} (target smaller: "
                  f"{'holds' if sd[0] < sd[1] else 'fails'})")
        out.append(f"- {name}: USL - random = {gap:+.1f} points on the mean (target >= +5: "
                   f"{'holds' if gap >= 5 else 'fails'}; paired by seed {', '.join(f'{d:+.1f}' for d in paired)}); "
                   f"{spread}; "
                   f"USL {100 * statistics.mean(u):.1f} % (target > 80 %: "
                   f"{'holds' if statistics.mean(u) > 0.8 else 'fails'}).")
    return out


def save(args, res) -> None:
    _io.atomic_write_json(args.out, res)
    if args.results_md and not args.quick:
        update_section(Path(args.results_md), SECTION, markdown(res))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=["simclr", "tune", "fixmatch", "diagnose", "plateau", "cost", "report"])
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--arch", default="cnn_small")
    ap.add_argument("--epochs", type=float, default=20, help="simclr length (ignored with --steps)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (fixmatch: overrides --minutes)")
    ap.add_argument("--minutes", type=float, default=30, help="fixmatch: CPU minutes per run (calibrated once)")
    ap.add_argument("--batch-size", type=int, default=256, help="simclr batch size")
    ap.add_argument("--seed", type=int, default=0, help="simclr seed")
    ap.add_argument("--budgets", type=int, nargs="+", default=[20], help="diagnose: budgets to examine")
    ap.add_argument("--methods", nargs="+", default=list(FIX_METHODS))
    ap.add_argument("--cost-archs", nargs="+", default=["cnn_small", "wrn28_2", "resnet18_cifar"])
    ap.add_argument("--cost-batch", type=int, default=64)
    ap.add_argument("--cost-repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(FIX_SEEDS))
    ap.add_argument("--no-init", action="store_true", help="fixmatch from scratch")
    ap.add_argument("--selection-embedding", default="simclr", choices=["simclr", "pixels"])
    ap.add_argument("--config", action="append", metavar="JSON",
                    help="tune: train_simclr keywords of one short run, repeatable (e.g. '{\"temperature\": 0.1}')")
    ap.add_argument("--param", type=parse_param, action="append", metavar="KEY=VALUE",
                    help="extra learner keyword, repeatable (e.g. --param lr=0.05)")
    ap.add_argument("--work", default="data/bench_runs", help="training run folders (resumable)")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--results-md", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = HERE / "results" / ("train_fmnist_quick.json" if args.quick else "train_fmnist.json")
    args.out = Path(args.out)
    if args.quick:
        args.work = str(Path(args.work) / "quick")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    res = migrate(_io.read_json(args.out)) if args.out.exists() else {}
    cfg = {"dataset": args.dataset, "arch": args.arch, "quick": args.quick}
    if res and res.get("config") != cfg:
        raise SystemExit(f"{args.out} holds results for {res.get('config')}, not {cfg}; use --out")
    res["config"] = cfg
    if args.stage != "report":
        res["machine"] = machine()
        stage = {"simclr": stage_simclr, "tune": stage_tune, "fixmatch": stage_fixmatch, "diagnose": stage_diagnose,
                 "plateau": stage_plateau, "cost": stage_cost}
        res = stage[args.stage](args, res)
    save(args, res)
    log(markdown(res))


if __name__ == "__main__":
    main()
