"""Embeddings: encoders, PCA, caching with sidecars, atomic writes, CLI."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from uslkit import embed as E
from uslkit.cli import main
from uslkit.data import load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")


def test_pixels_embedding_shape_norm_and_determinism(digits):
    a = E.embed_dataset(digits, "pixels", pca=16, seed=0, progress=False)
    b = E.embed_dataset(digits, "pixels", pca=16, seed=0, progress=False)
    assert a.shape == (len(digits), 16) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a, b)  # bit for bit


def test_pca_matches_sklearn_subspace(digits):
    from sklearn.decomposition import PCA

    x = digits.images.reshape(len(digits), -1).astype(np.float32) / 255
    ours = E.fit_pca(x, 5)
    ref = PCA(n_components=5, svd_solver="full").fit(x)
    # same components up to sign, same explained variance ratio
    np.testing.assert_allclose(np.abs(ours.components @ ref.components_.T), np.eye(5), atol=1e-4)
    np.testing.assert_allclose(ours.explained_variance_ratio, ref.explained_variance_ratio_, rtol=1e-4)
    # sign convention: largest-magnitude loading of each component is positive
    piv = np.argmax(np.abs(ours.components), axis=1)
    assert (ours.components[np.arange(5), piv] > 0).all()


def test_pca_too_large_is_an_error(digits):
    with pytest.raises(ValueError, match="pca"):
        E.embed_dataset(digits, "pixels", pca=65, progress=False)


def test_unknown_encoder_and_missing_ckpt(digits, tmp_path):
    with pytest.raises(ValueError, match="unknown encoder 'vgg'"):
        E.embed_dataset(digits, "vgg", progress=False)
    with pytest.raises(FileNotFoundError, match="no_model.pt"):
        E.embed_dataset(digits, f"ckpt:{tmp_path / 'no_model.pt'}", progress=False)


def test_resnet18_random_weights_on_cpu(digits):
    small = digits.subset(np.arange(6))
    f = E.embed_dataset(small, "resnet18", weights="none", image_size=32, batch_size=4, device="cpu",
                        progress=False)
    assert f.shape == (6, 512) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    g = E.embed_dataset(small, "resnet18", weights="none", image_size=32, batch_size=3, device="cpu",
                        progress=False)
    np.testing.assert_allclose(f, g, atol=1e-5)  # seeded init, batch size does not matter


def test_resnet_offline_error_says_where_to_put_weights(digits, monkeypatch):
    import torchvision.models._api as api

    def offline(*a, **k):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(E.WeightsUnavailableError, match=r"resnet18-f37072fd\.pth"):
        E.embed_dataset(digits.subset(np.arange(2)), "resnet18", device="cpu", progress=False)


def test_cuda_requested_without_cuda_is_clear(digits):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        E.embed_dataset(digits.subset(np.arange(2)), "resnet18", weights="none", device="cuda", progress=False)


def test_cache_reuse_and_invalidation(tmp_path):
    cache = tmp_path / "cache"
    a, meta = E.compute_embeddings("digits", pca=8, cache_dir=cache, progress=False)
    assert not meta["reused"]
    path = cache / "digits" / "train" / "pixels_pca8_s0.npy"
    side = json.loads(path.with_suffix(".json").read_text())
    for key in ("dataset", "split", "encoder", "params", "n", "dim", "uslkit_version", "git_commit", "seed",
                "created", "data_fingerprint"):
        assert key in side, key
    assert side["n"] == 1797 and side["dim"] == 8 and side["params"]["pca"] == 8

    b, meta = E.compute_embeddings("digits", pca=8, cache_dir=cache, progress=False)
    assert meta["reused"] and np.array_equal(a, b)

    # a sidecar that no longer matches (e.g. edited parameters) is recomputed, never reused
    side["params"]["pca"] = 9
    path.with_suffix(".json").write_text(json.dumps(side))
    with pytest.warns(UserWarning, match="recomputing .*params"):
        c, meta = E.compute_embeddings("digits", pca=8, cache_dir=cache, progress=False)
    assert not meta["reused"] and np.array_equal(a, c)
    assert json.loads(path.with_suffix(".json").read_text())["params"]["pca"] == 8

    # a truncated cache file is detected and recomputed
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="recomputing"):
        d, _ = E.compute_embeddings("digits", pca=8, cache_dir=cache, progress=False)
    assert np.array_equal(a, d)

    # different parameters live in a different cache entry
    e, meta = E.compute_embeddings("digits", pca=4, cache_dir=cache, progress=False)
    assert e.shape == (1797, 4) and not meta["reused"]


def test_explicit_out_is_never_silently_replaced(tmp_path):
    out = tmp_path / "emb.npy"
    a, _ = E.compute_embeddings("digits", pca=8, out=out, progress=False)
    _, meta = E.compute_embeddings("digits", pca=8, out=out, progress=False)
    assert meta["reused"]
    with pytest.raises(E.EmbeddingMismatchError, match="overwrite"):
        E.compute_embeddings("digits", pca=4, out=out, progress=False)
    assert np.load(out).shape == (1797, 8)  # untouched
    b, _ = E.compute_embeddings("digits", pca=4, out=out, overwrite=True, progress=False)
    assert np.load(out).shape == (1797, 4)


def test_test_split_uses_train_pca(tmp_path):
    tr, _ = E.compute_embeddings("fashion_mnist", split="train", pca=16, cache_dir=tmp_path, progress=False)
    te, meta = E.compute_embeddings("fashion_mnist", split="test", pca=16, cache_dir=tmp_path, progress=False)
    assert te.shape == (10000, 16) and meta["params"]["pca_fit_split"] == "train"
    # 1-NN on the train embedding classifies the test embedding well only if they share a space
    ds_tr, ds_te = load_dataset("fashion_mnist", "train"), load_dataset("fashion_mnist", "test")
    sims = te[:500] @ tr[:20000].T
    acc = (ds_tr.labels[:20000][sims.argmax(1)] == ds_te.labels[:500]).mean()
    assert acc > 0.75


def test_load_embeddings_checks_shape_against_sidecar(tmp_path):
    p = E.save_embeddings(tmp_path / "e.npy", np.ones((4, 2), np.float32), {"dataset": "x"})
    emb, meta = E.load_embeddings(p)
    assert emb.shape == (4, 2) and meta["n"] == 4
    side = json.loads(p.with_suffix(".json").read_text())
    side["n"] = 5
    p.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ValueError, match="sidecar records n=5"):
        E.load_embeddings(p)
    with pytest.raises(FileExistsError):
        E.save_embeddings(p, np.ones((4, 2), np.float32), {})


def test_cli_embed(tmp_path, capsys):
    out = tmp_path / "emb.npy"
    assert main(["embed", "--dataset", "digits", "--pca", "8", "--out", str(out), "-q"]) == 0
    assert "wrote" in capsys.readouterr().out and np.load(out).shape == (1797, 8)
    assert main(["embed", "--dataset", "digits", "--pca", "8", "--out", str(out), "-q"]) == 0
    assert "reused" in capsys.readouterr().out
    assert main(["embed", "--dataset", "digits", "--pca", "4", "--out", str(out), "-q"]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["embed", "--dataset", "no_such_set", "--out", str(tmp_path / "x.npy")]) == 2
    assert "no_such_set" in capsys.readouterr().err


def test_cli_help_for_every_subcommand(capsys):
    for cmd in ("datasets", "embed", "select", "demo"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: uslkit " + cmd in capsys.readouterr().out


def test_no_warnings_on_clean_cache_hit(tmp_path):
    E.compute_embeddings("digits", pca=8, cache_dir=tmp_path, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        E.compute_embeddings("digits", pca=8, cache_dir=tmp_path, progress=False)


# ----------------------------------------------------------------------------------------------------------
# ckpt:<path> encoders (kit-trained checkpoints)
# ----------------------------------------------------------------------------------------------------------
def _save_cnn(path, *, seed=0, in_channels=1, overwrite=False):
    from uslkit.train.models import build_model, save_model

    return save_model(path, build_model("cnn_small", 0, in_channels=in_channels, seed=seed), overwrite=overwrite)


def test_ckpt_encoder_embeds_digits_at_8x8(digits, tmp_path):
    import torch

    from uslkit.train.augment import normalize
    from uslkit.train.models import load_model

    path = _save_cnn(tmp_path / "cnn.pt")
    f = E.embed_dataset(digits, f"ckpt:{path}", batch_size=500, device="cpu", progress=False)
    assert f.shape == (len(digits), 128) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    # the same as running the model by hand on the normalised 8x8 images
    net = load_model(path).eval()
    x = normalize(torch.from_numpy(digits.images[:5]).unsqueeze(1), "grey28")
    with torch.no_grad():
        ref = E.l2_normalize(net.features(x).numpy())
    np.testing.assert_allclose(f[:5], ref, atol=1e-5)
    g = E.embed_dataset(digits.subset(np.arange(5)), f"ckpt:{path}", batch_size=2, device="cpu", pca=None,
                        progress=False)
    np.testing.assert_allclose(g, f[:5], atol=1e-5)  # eval mode: batch composition does not matter
    h = E.embed_dataset(digits, f"ckpt:{path}", pca=8, device="cpu", progress=False)
    assert h.shape == (len(digits), 8)


def test_ckpt_encoder_errors(digits, tmp_path):
    rgb = _save_cnn(tmp_path / "rgb.pt", in_channels=3)
    with pytest.raises(ValueError, match=r"rgb.pt takes in_channels=3 but dataset digits/train has 1-channel"):
        E.embed_dataset(digits, f"ckpt:{rgb}", device="cpu", progress=False)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a uslkit model checkpoint"):
        E.embed_dataset(digits, f"ckpt:{junk}", device="cpu", progress=False)


def test_ckpt_cache_is_keyed_on_the_checkpoint_content(tmp_path):
    path = _save_cnn(tmp_path / "model.pt", seed=0)
    enc = f"ckpt:{path}"
    cache = tmp_path / "cache"
    a, meta = E.compute_embeddings("digits", encoder=enc, cache_dir=cache, device="cpu", progress=False)
    assert not meta["reused"] and a.shape == (1797, 128)
    assert meta["params"]["arch"]["name"] == "cnn_small"
    assert len(meta["params"]["checkpoint_sha256"]) == 64
    assert meta["encoder"] == f"ckpt:{path.resolve()}"
    files = list((cache / "digits" / "train").glob("*.npy"))
    assert len(files) == 1 and files[0].name.startswith("ckpt-model-")
    b, meta = E.compute_embeddings("digits", encoder=enc, cache_dir=cache, device="cpu", progress=False)
    assert meta["reused"] and np.array_equal(a, b)

    _save_cnn(path, seed=1, overwrite=True)  # same path, different weights
    with pytest.warns(UserWarning, match="recomputing .*params"):
        c, meta = E.compute_embeddings("digits", encoder=enc, cache_dir=cache, device="cpu", progress=False)
    assert not meta["reused"] and not np.allclose(a, c)

    out = tmp_path / "emb.npy"
    E.compute_embeddings("digits", encoder=enc, out=out, device="cpu", progress=False)
    _save_cnn(path, seed=2, overwrite=True)
    with pytest.raises(E.EmbeddingMismatchError, match="checkpoint_sha256"):
        E.compute_embeddings("digits", encoder=enc, out=out, device="cpu", progress=False)


def test_cli_embed_ckpt(tmp_path, capsys):
    path = _save_cnn(tmp_path / "m.pt")
    out = tmp_path / "emb.npy"
    assert main(["embed", "--dataset", "digits", "--encoder", f"ckpt:{path}", "--out", str(out), "-q"]) == 0
    assert np.load(out).shape == (1797, 128)
    assert main(["embed", "--dataset", "digits", "--encoder", f"ckpt:{tmp_path / 'gone.pt'}", "--out",
                 str(tmp_path / "x.npy"), "-q"]) == 2
    assert "gone.pt" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# ckpt:<path> with features="head" (the projection head's output, what USL selects on)
# ----------------------------------------------------------------------------------------------------------
def _save_with_head(path, *, seed=0, proj_dim=16, hidden=32):
    """A model file laid out as a SimCLR run writes it: the encoder, and the projector's weights under
    ``extra["extras"]["projector"]``; BN running statistics made non-trivial so eval mode is checked."""
    import torch

    from uslkit.train.models import build_model, save_model
    from uslkit.train.simclr import SimCLRModule

    torch.manual_seed(seed)
    module = SimCLRModule(build_model("cnn_small", 0, in_channels=1, seed=seed), proj_dim=proj_dim, hidden=hidden)
    with torch.no_grad():
        module.projector[1].running_mean.normal_()
        module.projector[1].running_var.uniform_(0.5, 2.0)
    save_model(path, module.net, extra={"learner": "simclr", "extras": {"projector": module.projector.state_dict()}})
    return module.eval()


def test_ckpt_head_features_match_the_projector_by_hand(digits, tmp_path):
    import torch

    from uslkit.train.augment import normalize

    module = _save_with_head(tmp_path / "m.pt")
    enc = f"ckpt:{tmp_path / 'm.pt'}"
    h = E.embed_dataset(digits, enc, features="head", batch_size=400, device="cpu", progress=False)
    assert h.shape == (len(digits), 16) and h.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(h, axis=1), 1.0, atol=1e-5)
    x = normalize(torch.from_numpy(digits.images[:7]).unsqueeze(1), "grey28")
    with torch.no_grad():
        ref = E.l2_normalize(module.projector(module.net.features(x)).numpy())
        ref_backbone = E.l2_normalize(module.net.features(x).numpy())
    np.testing.assert_allclose(h[:7], ref, atol=1e-5)
    b = E.embed_dataset(digits, enc, batch_size=400, device="cpu", progress=False)  # default: backbone
    assert b.shape == (len(digits), 128)
    np.testing.assert_allclose(b[:7], ref_backbone, atol=1e-5)
    np.testing.assert_array_equal(b, E.embed_dataset(digits, enc, features="backbone", batch_size=400,
                                                     device="cpu", progress=False))


def test_ckpt_head_errors(digits, tmp_path):
    plain = _save_cnn(tmp_path / "plain.pt")
    with pytest.raises(ValueError, match=r"plain.pt has no projection head .*features='backbone'"):
        E.embed_dataset(digits, f"ckpt:{plain}", features="head", device="cpu", progress=False)
    with pytest.raises(ValueError, match="features='head' needs a 'ckpt:<path>' encoder"):
        E.embed_dataset(digits, "pixels", features="head", progress=False)
    with pytest.raises(ValueError, match=r"features must be one of \('backbone', 'head'\), got 'proj'"):
        E.embed_dataset(digits, f"ckpt:{plain}", features="proj", device="cpu", progress=False)


def test_ckpt_head_and_backbone_are_cached_apart(tmp_path):
    _save_with_head(tmp_path / "model.pt")
    enc, cache = f"ckpt:{tmp_path / 'model.pt'}", tmp_path / "cache"
    kw = dict(encoder=enc, cache_dir=cache, device="cpu", progress=False)
    b, mb = E.compute_embeddings("digits", **kw)
    h, mh = E.compute_embeddings("digits", features="head", **kw)
    assert b.shape == (1797, 128) and h.shape == (1797, 16)
    assert "features" not in mb["params"] and mh["params"]["features"] == "head"  # backbone sidecars unchanged
    assert mb["path"] != mh["path"] and Path(mh["path"]).name.endswith("_head_s0.npy")
    again, meta = E.compute_embeddings("digits", features="head", **kw)
    assert meta["reused"] and np.array_equal(again, h)


def test_ckpt_head_of_a_real_simclr_run(digits, tmp_path):
    """The head is read from what train_simclr writes; model.pt and the training state agree."""
    import torch

    from uslkit.train.augment import normalize
    from uslkit.train.simclr import train_simclr

    small = digits.subset(np.arange(64))
    res = train_simclr(small, preset="cpu", steps=1, batch_size=32, out_dir=tmp_path / "run", progress=False)
    a = E.embed_dataset(small, f"ckpt:{tmp_path / 'run' / 'model.pt'}", features="head", device="cpu",
                        progress=False)
    net, projector = res.net.cpu().eval(), res.extras["projector"].cpu().eval()
    with torch.no_grad():
        ref = E.l2_normalize(projector(net.features(normalize(torch.from_numpy(small.images).unsqueeze(1),
                                                                "grey28"))).numpy())
    np.testing.assert_allclose(a, ref, atol=1e-5)
    state = tmp_path / "run" / "state.pt"
    if state.exists():
        s = E.embed_dataset(small, f"ckpt:{state}", features="head", device="cpu", progress=False)
        np.testing.assert_allclose(s, a, atol=1e-6)


def test_cli_embed_features_head(tmp_path):
    _save_with_head(tmp_path / "m.pt")
    out = tmp_path / "emb.npy"
    assert main(["embed", "--dataset", "digits", "--encoder", f"ckpt:{tmp_path / 'm.pt'}", "--features", "head",
                 "--out", str(out), "-q"]) == 0
    assert np.load(out).shape == (1797, 16)
