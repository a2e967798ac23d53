"""Training-core models: shapes, parameter counts, checkpoint save/load and their errors."""

import io

import pytest
import torch

from uslkit.train import models as M


@pytest.mark.parametrize("name,dim", [("cnn_small", 128), ("resnet18_cifar", 512), ("wrn28_2", 128)])
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_small_models_shapes(name, dim, channels, size):
    net = M.build_model(name, 10, in_channels=channels, seed=0).eval()
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        f, y = net.features(x), net(x)
    assert net.feat_dim == dim and f.shape == (2, dim) and y.shape == (2, 10)
    assert net.arch["name"] == name and net.arch["num_classes"] == 10 and net.arch["in_channels"] == channels
    assert isinstance(net.head, torch.nn.Linear) and net.head.in_features == dim


def test_resnet50_shapes_and_identity_head():
    net = M.build_model("resnet50", 0, seed=0).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 3, 64, 64))
    assert net.feat_dim == 2048 and y.shape == (2, 2048) and isinstance(net.head, torch.nn.Identity)


def test_resnet50_grey_conv1_sums_rgb_kernels():
    rgb = M.build_model("resnet50", 0, seed=3).eval()
    grey = M.build_model("resnet50", 0, in_channels=1, seed=3).eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.expand(1, 3, 64, 64)), rtol=1e-4, atol=1e-4)


def test_resnet50_weights_file(tmp_path):
    src = M.build_model("resnet50", 0, seed=1)
    state = {f"module.{k}": v for k, v in src.encoder.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(1000, 2048)  # a torchvision file has fc; it is ignored
    torch.save({"state_dict": state}, tmp_path / "r50.pth")
    net = M.build_model("resnet50", 0, weights=str(tmp_path / "r50.pth"))
    assert torch.equal(net.encoder.conv1.weight, src.encoder.conv1.weight)
    assert "weights" not in net.arch  # the weights travel in the state dict, not the arch
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        M.build_model("resnet50", 0, weights=str(tmp_path / "nope.pth"))


def test_cnn_small_is_small_and_takes_8x8():
    net = M.build_model("cnn_small", 10, in_channels=1)
    assert M.count_parameters(net) < 300_000
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_wrn28_2_matches_fixmatch():
    net = M.build_model("wrn28_2", 10)
    n = M.count_parameters(net)
    assert abs(n - 1.47e6) / 1.47e6 < 0.01, n  # FixMatch's WRN-28-2: 1.47 M parameters
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.001 for m in bns)
    assert torch.count_nonzero(net.head.bias) == 0
    assert net.arch == {"name": "wrn28_2", "num_classes": 10, "in_channels": 3, "depth": 28, "widen_factor": 2,
                        "drop_rate": 0.0}
    assert M.build_model("wrn28_2", 10, depth=10, widen_factor=1).feat_dim == 64


def test_seed_gives_same_weights_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = M.build_model("cnn_small", 3, in_channels=1, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = M.build_model("cnn_small", 3, in_channels=1, seed=7)
    c = M.build_model("cnn_small", 3, in_channels=1, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["encoder.0.weight"], sc["encoder.0.weight"])


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="vgg16"), r"unknown model 'vgg16'; choose one of cnn_small, resnet18_cifar, wrn28_2, resnet50"),
    (dict(name="cnn_small", num_classes=-1), r"num_classes must be an integer >= 0, got -1"),
    (dict(name="cnn_small", in_channels=2), r"in_channels must be 1 \(grey\) or 3 \(colour\).*got 2"),
    (dict(name="wrn28_2", depth=27), r"\(depth - 4\) % 6 == 0.*got 27"),
    (dict(name="cnn_small", depth=28), r"unknown argument\(s\) \['depth'\] for model 'cnn_small'"),
])
def test_build_model_errors(kwargs, match):
    kwargs = dict(kwargs)
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=match):
        M.build_model(name, **kwargs)


def test_save_load_round_trip_is_exact(tmp_path):
    net = M.build_model("wrn28_2", 5, in_channels=1, depth=10, seed=0)
    net.train()
    net(torch.randn(4, 1, 28, 28))  # move BN running stats away from their init
    path = M.save_model(tmp_path / "sub" / "m.pt", net, extra={"step": 3, "note": "x", "hist": [1.0, 2.0]})
    assert path.exists() and not list(path.parent.glob(".*tmp"))  # atomic: no temp file left behind
    back = M.load_model(path)
    assert isinstance(back, M.Net) and back.arch == net.arch
    x = torch.randn(3, 1, 28, 28)
    net.eval(), back.eval()
    with torch.no_grad():
        assert torch.equal(net(x), back(x)) and torch.equal(net.features(x), back.features(x))
    ck = torch.load(path, weights_only=True)  # plain content: loads without unpickling code
    assert ck["format"] == "uslkit-model" and ck["version"] == 1 and ck["extra"]["step"] == 3
    for key in ("uslkit_version", "git_commit", "created"):
        assert key in ck


def test_save_refuses_overwrite_and_bad_extra(tmp_path):
    net = M.build_model("cnn_small", 2, in_channels=1)
    path = M.save_model(tmp_path / "m.pt", net)
    with pytest.raises(FileExistsError, match="m.pt"):
        M.save_model(path, net)
    M.save_model(path, net, overwrite=True)
    import numpy as np

    with pytest.raises(ValueError, match=r"extra\['a'\] is a ndarray"):
        M.save_model(tmp_path / "n.pt", net, extra={"a": np.zeros(2)})
    with pytest.raises(ValueError, match="needs a uslkit Net"):
        M.save_model(tmp_path / "n.pt", torch.nn.Linear(2, 2))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        M.load_model(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a torch file at all")
    with pytest.raises(ValueError, match=r"junk.pt is not a uslkit model checkpoint: "):
        M.load_model(junk)
    good = M.save_model(tmp_path / "good.pt", M.build_model("cnn_small", 2, in_channels=1))
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"trunc.pt is not a uslkit model checkpoint: "):
        M.load_model(trunc)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else", "arch": {}}, other)
    with pytest.raises(ValueError, match=r"format is 'something-else'"):
        M.load_model(other)
    bare = tmp_path / "bare.pt"
    torch.save({"weight": torch.zeros(2)}, bare)
    with pytest.raises(ValueError, match=r"bare.pt is not a uslkit model checkpoint: expected a dict with a 'format'"):
        M.load_model(bare)


def test_pickled_objects_need_trusted(tmp_path):
    path = tmp_path / "module.pt"
    net = M.build_model("cnn_small", 2, in_channels=1)
    buf = io.BytesIO()
    torch.save({"format": "uslkit-model", "arch": net.arch, "state_dict": net.state_dict(),
                "extra": {"obj": _Obj()}}, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="trusted=True"):
        M.load_model(path)
    assert isinstance(M.load_model(path, trusted=True), M.Net)


class _Obj:
    pass


def test_expect_mismatch_names_both_values(tmp_path):
    path = M.save_model(tmp_path / "w.pt", M.build_model("wrn28_2", 10, depth=10))
    with pytest.raises(ValueError, match=r"checkpoint has arch name='wrn28_2' but expected 'cnn_small'"):
        M.load_model(path, expect={"name": "cnn_small"})
    with pytest.raises(ValueError, match=r"checkpoint has arch in_channels=3 but expected 1"):
        M.load_model(path, expect={"name": "wrn28_2", "in_channels": 1})
    assert M.load_model(path, expect={"name": "wrn28_2", "num_classes": 10}).arch["depth"] == 10


def test_check_arch():
    a = M.build_model("cnn_small", 10, in_channels=1)
    M.check_arch(dict(a.arch), a)
    with pytest.raises(ValueError, match=r"checkpoint has arch .*'wrn28_2'.* but the model has arch .*cnn_small.*"
                                         r"differs in .*name: 'wrn28_2' vs 'cnn_small'"):
        M.check_arch({"name": "wrn28_2", "num_classes": 10, "in_channels": 1}, a)
    with pytest.raises(ValueError, match=r"init has arch .*num_classes: 3 vs 10"):
        M.check_arch(dict(a.arch, num_classes=3), a.arch, what="init")


def test_training_state_accepted_with_ema(tmp_path):
    net = M.build_model("cnn_small", 4, in_channels=1, seed=0)
    ema = M.build_model("cnn_small", 4, in_channels=1, seed=1)
    state = {"format": "uslkit-train-state", "version": 1, "arch": net.arch, "model": net.state_dict(),
             "ema": ema.state_dict(), "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}, "step": 10}
    path = tmp_path / "state.pt"
    torch.save(state, path)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(M.load_model(path).eval()(x), net.eval()(x))
        assert torch.equal(M.load_model(path, use_ema=True).eval()(x), ema.eval()(x))
    torch.save(dict(state, ema=None), path)
    with pytest.raises(ValueError, match="no EMA weights"):
        M.load_model(path, use_ema=True)
    plain = M.save_model(tmp_path / "plain.pt", net)
    with pytest.raises(ValueError, match="no EMA weights"):
        M.load_model(plain, use_ema=True)


def test_weights_that_do_not_fit_the_arch(tmp_path):
    net = M.build_model("cnn_small", 4, in_channels=1)
    state = {"format": "uslkit-train-state", "arch": dict(net.arch, num_classes=5), "model": net.state_dict()}
    torch.save(state, tmp_path / "s.pt")
    with pytest.raises(ValueError, match=r"do not fit arch"):
        M.load_model(tmp_path / "s.pt")
