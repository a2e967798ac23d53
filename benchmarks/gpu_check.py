"""Smoke check of the training paths on a CUDA device (no GPU here: run it where one is lent).

Runs every registered learner (``uslkit.train.LEARNERS``) for a few steps on sklearn's digits on CUDA with AMP,
with a preset and explicit overrides, checks that the losses are finite, that the run record holds the explicit
values, that an interrupted run resumes to the same step count, and that the CUDA batched augmentations match the
CPU ones. Prints one line per check and ``N passed, N failed`` at the end; exit status 1 on any failure.

    PYTHONPATH=. python benchmarks/gpu_check.py --out /tmp/gpu_check
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/gpu_check")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the same checks without AMP")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device")
        return 2
    dev, amp = args.device, args.device == "cuda"
    from uslkit.data import load_dataset
    from uslkit.labels import annotate, make_selection, save_selection
    from uslkit.train import LEARNERS

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    idx = np.concatenate([np.flatnonzero(train.labels == c)[:4] for c in range(10)])
    sel = annotate(make_selection(idx, dataset=train, method="check", seed=0), train)
    labels = save_selection(sel, out / "labels.json", overwrite=True)
    results = []

    def check(name, fn):
        t0 = time.perf_counter()
        try:
            fn()
            results.append(True)
            print(f"PASS {name} ({time.perf_counter() - t0:.1f} s)")
        except Exception:  # report every check
            results.append(False)
            print(f"FAIL {name}\n{traceback.format_exc()}")

    def simclr():
        res = LEARNERS["simclr"].run(train, test_set=test, preset="paper", arch="cnn_small", batch_size=64, steps=4,
                                     device=dev, amp=amp, progress=False, out_dir=out / "simclr", overwrite=True,
                                     log_every=1)
        assert next(res.net.parameters()).device.type == dev
        assert all(math.isfinite(h["loss"]) for h in res.history), res.history
        params = json.loads((out / "simclr" / "config.json").read_text())["params"]
        assert params["batch_size"] == 64 and params["optimizer"] == "lars" and params["jitter_strength"] == 1.0

    def fixmatch():
        kw = dict(init=out / "simclr" / "model.pt", test_set=test, preset="cpu", steps=6, batch_size=8, mu=2,
                  ema_decay=0.999, cutout="fixed", device=dev, amp=amp, progress=False, ckpt_every=3, log_every=1)
        first = LEARNERS["fixmatch"].run(train, labels=labels, out_dir=out / "fm", overwrite=True, **kw)
        assert all(math.isfinite(h["loss"]) for h in first.history)
        cfg = json.loads((out / "fm" / "config.json").read_text())
        assert cfg["ema_decay"] == 0.999 and cfg["params"]["cutout"] == "fixed"
        assert 0.0 <= first.metrics["ema_top1"] <= 1.0
        again = LEARNERS["fixmatch"].run(train, labels=labels, out_dir=out / "fm", **kw)
        assert again.reused and again.step == 6

    def finetune():
        res = LEARNERS["finetune"].run(train, labels=labels, init=out / "simclr" / "model.pt", test_set=test,
                                       epochs=1, samples_per_epoch=40, device=dev, amp=amp, progress=False,
                                       out_dir=out / "ft", overwrite=True)
        assert 0.0 <= res.metrics["top1"] <= 1.0

    def augment_matches_cpu():
        from uslkit.train.augment import BatchAugment

        x = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
        s = np.arange(16, dtype=np.int64) * 7919
        for policy in ("weak", "strong", "simclr"):
            aug = BatchAugment("grey28", policy)
            gpu = aug(x.to(dev), torch.from_numpy(s).to(dev)).cpu()
            torch.testing.assert_close(gpu, aug(x, s), atol=1e-4, rtol=0)

    check("simclr: paper preset + explicit arch/batch, CUDA + AMP", simclr)
    check("fixmatch: cpu preset + explicit ema_decay 0.999 + fixed Cutout, CUDA + AMP, reuse", fixmatch)
    check("finetune: linear, CUDA + AMP", finetune)
    check("batched augmentations on CUDA match the CPU", augment_matches_cpu)
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
