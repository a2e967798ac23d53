"""Training-core augmentations: shapes, seeding, determinism, normalisation, picklability."""

import pickle
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from uslkit.data import ImageDataset
from uslkit.train import augment as A
from uslkit.train.augment import batched as AB
from uslkit.train.augment import policies as AP
from uslkit.train.augment import sample as AS

TRANSFORMS = {
    "test": lambda k: A.test_transform(k),
    "weak": lambda k: A.weak_transform(k),
    "strong": lambda k: A.strong_transform(k),
    "simclr": lambda k: A.simclr_transform(k),
}
OUT_SIZE = {"grey28": 28, "rgb32": 32, "imagenet": 224}


def _img(c, h, w=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (c, h, w or h), dtype=torch.uint8, generator=g)


def _smooth(c, h, seed=0):
    """A structured image (blobs) so that colour/contrast ops have something to act on."""
    x = torch.nn.functional.interpolate(_img(c, 6, seed=seed)[None].float(), size=(h, h), mode="bilinear")
    return x[0].round().clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("kind,c,h", [("grey28", 1, 28), ("rgb32", 3, 32), ("imagenet", 3, 40),
                                      ("imagenet", 1, 40)])
def test_shapes_and_dtype(name, kind, c, h):
    out = A.seeded_call(TRANSFORMS[name](kind), _img(c, h), 0)
    s = OUT_SIZE[kind]
    assert out.dtype == torch.float32 and out.shape == (c, s, s)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_grey_and_colour_inputs_from_pil_and_numpy(name):
    arr = _smooth(1, 28).numpy()[0]
    for src in (arr, Image.fromarray(arr)):
        assert A.seeded_call(TRANSFORMS[name]("grey28"), src, 1).shape == (1, 28, 28)
    rgb = _smooth(3, 32).permute(1, 2, 0).numpy()
    for src in (rgb, Image.fromarray(rgb)):
        assert A.seeded_call(TRANSFORMS[name]("rgb32"), src, 1).shape == (3, 32, 32)
    # a colour kind on a grey image (and the other way round) keeps the channel count
    assert A.seeded_call(TRANSFORMS[name]("rgb32"), _img(1, 32), 1).shape == (1, 32, 32)
    assert A.seeded_call(TRANSFORMS[name]("grey28"), _img(3, 28), 1).shape == (3, 28, 28)


def test_small_images_keep_their_size():
    for t in (A.weak_transform("grey28"), A.strong_transform("grey28"), A.simclr_transform("grey28")):
        assert A.seeded_call(t, _img(1, 8), 0).shape == (1, 8, 8)  # sklearn digits


@pytest.mark.parametrize("name", ["weak", "strong", "simclr"])
def test_seeded_call_is_bit_identical_and_seed_dependent(name):
    t, img = TRANSFORMS[name]("rgb32"), _smooth(3, 32)
    a = A.seeded_call(t, img, 5)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)  # other RNGs must not matter
    b = A.seeded_call(t, img, 5)
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    c = A.seeded_call(t, img, 5)
    assert torch.equal(a, b) and torch.equal(a, c)
    outs = [A.seeded_call(t, img, s) for s in range(6)]
    assert sum(not torch.equal(outs[0], o) for o in outs[1:]) >= 4


def test_seeded_call_leaves_the_callers_rng_alone():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    A.seeded_call(A.strong_transform("grey28"), _img(1, 28), 3)
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="seed"):
        A.seeded_call(A.weak_transform("grey28"), _img(1, 28), -1)


def test_test_transform_is_deterministic_and_batchable():
    t = A.test_transform("grey28")
    img = _img(1, 28)
    torch.manual_seed(0)
    a = t(img)
    torch.manual_seed(1)
    assert torch.equal(a, t(img))
    torch.testing.assert_close(a, A.normalize(img, "grey28"))
    batch = torch.stack([_img(3, 50, seed=s) for s in range(3)])
    out = A.test_transform("imagenet")(batch)
    assert out.shape == (3, 3, 224, 224)
    torch.testing.assert_close(out[1], A.test_transform("imagenet")(batch[1]))
    assert A.test_transform("grey28", image_size=16)(_img(1, 8)).shape == (1, 16, 16)


def test_strong_differs_from_weak_on_average():
    weak, strong = A.weak_transform("rgb32"), A.strong_transform("rgb32")
    # a flat image is invariant to flips and reflect-padded shifts, not to RandAugment + Cutout
    flat = torch.full((3, 32, 32), 90, dtype=torch.uint8)
    ref = A.test_transform("rgb32")(flat)
    dw = [(A.seeded_call(weak, flat, s) - ref).abs().mean().item() for s in range(40)]
    ds = [(A.seeded_call(strong, flat, s) - ref).abs().mean().item() for s in range(40)]
    assert max(dw) == 0 and np.mean(ds) > 0.1 and np.mean(np.array(ds) > 0) > 0.5
    img = _smooth(3, 32)
    ref = A.test_transform("rgb32")(img)
    dw = np.mean([(A.seeded_call(weak, img, s) - ref).abs().mean().item() for s in range(40)])
    ds = np.mean([(A.seeded_call(strong, img, s) - ref).abs().mean().item() for s in range(40)])
    assert ds > dw, (dw, ds)


def test_every_fixmatch_op_runs_on_grey_and_colour():
    img = _smooth(3, 32, seed=3)
    for name, (op, rng, integer) in A.FIXMATCH_OPS.items():
        m = 0 if rng is None else (rng[0] if integer else 0.6 * rng[1] + 0.4 * rng[0])
        for x in (img, img[:1]):
            out = op(x, m)
            assert out.dtype == torch.uint8 and out.shape == x.shape, name
        changed = not torch.equal(op(img, m), img)
        assert changed == (name != "Identity"), name
    assert torch.equal(A.FIXMATCH_OPS["Color"][0](img[:1], 0.1), img[:1])  # Color on grey: identity
    assert torch.equal(A.FIXMATCH_OPS["Solarize"][0](img, 0.0), 255 - img)  # threshold 0: all inverted


def test_cutout_square_is_grey_127():
    img = torch.zeros(3, 32, 32, dtype=torch.uint8)
    sides = []
    for s in range(30):
        out = A.seeded_call(A.Cutout(0.5), img, s)
        mask = (out == 127).all(0)
        assert torch.equal(out[:, ~mask], img[:, ~mask])  # nothing else touched
        if mask.any():
            rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
            h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
            assert int(mask.sum()) == h * w  # one (border-clipped) square
            sides.append(max(h, w))
    assert sides and max(sides) <= 16 and len(set(sides)) > 3  # random side up to 0.5 * 32


def test_normalize_stats():
    grey = torch.full((1, 4, 4), 255, dtype=torch.uint8)
    torch.testing.assert_close(A.normalize(grey, "grey28"), torch.full((1, 4, 4), (1 - 0.2860) / 0.3530))
    rgb = torch.zeros(2, 3, 2, 2, dtype=torch.uint8)
    out = A.normalize(rgb, "rgb32")
    torch.testing.assert_close(out[0, :, 0, 0], -torch.tensor([0.4914, 0.4822, 0.4465])
                               / torch.tensor([0.2470, 0.2435, 0.2616]))
    torch.testing.assert_close(A.normalize(rgb.float(), "imagenet")[0, :, 0, 0],
                               -torch.tensor([0.485, 0.456, 0.406]) / torch.tensor([0.229, 0.224, 0.225]))
    assert out.dtype == torch.float32 and out.shape == rgb.shape
    with pytest.raises(ValueError, match="unknown image kind 'cifar'"):
        A.normalize(grey, "cifar")
    with pytest.raises(ValueError, match=r"got shape \(4, 4\)"):
        A.normalize(grey[0], "grey28")


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_picklable_with_same_seeded_output(name):
    t = TRANSFORMS[name]("rgb32")
    img = _smooth(3, 32)
    t2 = pickle.loads(pickle.dumps(t))
    assert torch.equal(A.seeded_call(t, img, 9), A.seeded_call(t2, img, 9))
    pair = pickle.loads(pickle.dumps(A.MultiViews(A.weak_transform("rgb32"), t)))
    v1, v2 = A.seeded_call(pair, img, 9)
    assert v1.shape == v2.shape == (3, 32, 32)


def test_two_views_differ():
    t = A.MultiViews(A.simclr_transform("grey28"))
    v1, v2 = A.seeded_call(t, _smooth(1, 28), 0)
    assert not torch.equal(v1, v2)


def test_image_kind():
    assert A.image_kind((100, 28, 28)) == "grey28"
    assert A.image_kind((100, 32, 32, 3)) == "rgb32"
    assert A.image_kind((96, 96, 3)) == "imagenet"
    assert A.image_kind((8, 8)) == "grey28"
    assert A.image_kind(_img(3, 32)) == "rgb32" and A.image_kind(_img(1, 28)) == "grey28"
    assert A.image_kind(Image.new("RGB", (64, 64))) == "imagenet"
    ds = ImageDataset(name="x", split="train", images=np.zeros((2, 28, 28), np.uint8), labels=[0, 1],
                      class_names=["a", "b"], ids=[0, 1])
    assert A.image_kind(ds) == "grey28"
    files = ImageDataset(name="f", split="train", images=None, labels=[0], class_names=["a"], ids=["a/1.png"],
                         paths=["/nowhere/1.png"])
    assert A.image_kind(files) == "imagenet"
    with pytest.raises(ValueError, match="cannot read an image shape"):
        A.image_kind((1, 2, 3, 4, 5))


def test_to_uint8_tensor_errors_and_kinds():
    assert A.to_uint8_tensor(np.zeros((5, 6), np.uint8)).shape == (1, 5, 6)
    assert A.to_uint8_tensor(np.zeros((5, 6, 3), np.uint8)).shape == (3, 5, 6)
    assert A.to_uint8_tensor(Image.new("RGBA", (6, 5))).shape == (3, 5, 6)
    with pytest.raises(ValueError, match="float64"):
        A.to_uint8_tensor(np.zeros((5, 6)))
    with pytest.raises(ValueError, match="unknown image kind 'big'"):
        A.weak_transform("big")
    with pytest.raises(ValueError, match="cutout must be a fraction"):
        A.strong_transform("rgb32", cutout=2)


# ----------------------------------------------------------------------------------------------------------
# batched augmentation (BatchAugment, sample_uniform)
# ----------------------------------------------------------------------------------------------------------
BATCH_KINDS = [("grey28", 1, 28), ("rgb32", 3, 32)]


def _batch(b, c, h, seed=0):
    """A batch of structured images (bilinear blobs), uint8 (b, c, h, h)."""
    return torch.stack([_smooth(c, h, seed=seed * 1000 + i) for i in range(b)])


def test_sample_uniform_is_a_per_seed_counter_hash():
    s = np.array([0, 1, 2, 3, 2**40, 7], dtype=np.int64)
    u = A.sample_uniform(s, 3, 5)
    assert u.shape == (6, 5) and u.dtype == np.float64 and (u >= 0).all() and (u < 1).all()
    np.testing.assert_array_equal(u, A.sample_uniform(torch.from_numpy(s), 3, 5))  # tensor seeds
    np.testing.assert_array_equal(u[2], u[4 - 2])  # equal seeds, equal rows
    np.testing.assert_array_equal(u[::-1], A.sample_uniform(s[::-1], 3, 5))  # rows ignore the other seeds
    np.testing.assert_array_equal(u[:, :2], A.sample_uniform(s, 3, 2))  # a counter: a prefix of the row
    assert not np.array_equal(u, A.sample_uniform(s, 4, 5))  # the salt matters
    many = A.sample_uniform(np.arange(20000), 0, 2)
    assert abs(many.mean() - 0.5) < 0.01 and abs(np.corrcoef(many.T)[0, 1]) < 0.03
    assert np.histogram(many[:, 0], bins=10, range=(0, 1))[0].min() > 1800  # ~2000 per bin
    assert A.sample_uniform(np.zeros(0, np.int64), 0, 3).shape == (0, 3)
    with pytest.raises(ValueError, match="non-negative"):
        A.sample_uniform(np.array([-1]), 0, 1)
    with pytest.raises(ValueError, match="1-D integer"):
        A.sample_uniform(np.array([0.5]), 0, 1)
    with pytest.raises(ValueError, match="salt"):
        A.sample_uniform(np.array([1]), -2, 1)


@pytest.mark.parametrize("policy", A.BATCH_POLICIES)
@pytest.mark.parametrize("kind,c,h", BATCH_KINDS + [("grey28", 1, 8), ("rgb32", 1, 32), ("grey28", 3, 28)])
def test_batch_shapes_dtype_and_batch_composition_independence(policy, kind, c, h):
    x, s = _batch(6, c, h), np.array([5, 0, 9, 5, 123456789, 2])
    aug = A.BatchAugment(kind, policy)
    out = aug(x, s)
    assert out.dtype == torch.float32 and out.shape == x.shape and out.device == x.device
    assert torch.isfinite(out).all()
    for i in range(len(s)):  # sample i depends on (x[i], s[i]) only, bit for bit
        assert torch.equal(out[i], aug(x[i : i + 1], s[i : i + 1])[0]), i
    perm = np.array([3, 1, 5, 0, 2, 4])
    assert torch.equal(out[perm], aug(x[perm], s[perm]))
    assert torch.equal(out, aug(x, torch.from_numpy(s)))  # seeds as a tensor
    assert torch.equal(aug(x[:0], s[:0]), out[:0])


@pytest.mark.parametrize("policy", ["weak", "strong", "simclr"])
@pytest.mark.parametrize("kind,c,h", BATCH_KINDS)
def test_batch_is_deterministic_and_seed_dependent(policy, kind, c, h):
    aug = A.BatchAugment(kind, policy)
    x = _batch(1, c, h).expand(12, -1, -1, -1)  # one image, 12 seeds
    a = aug(x, np.arange(12))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)  # global RNGs must not matter
    assert torch.equal(a, aug(x, np.arange(12)))
    assert torch.equal(a, pickle.loads(pickle.dumps(aug))(x, np.arange(12)))
    distinct = {a[i].numpy().tobytes() for i in range(12)}
    assert len(distinct) >= 9, len(distinct)
    b = aug(x, np.arange(12) + 100)
    assert sum(not torch.equal(a[i], b[i]) for i in range(12)) >= 9


def test_batch_weak_and_strong_draws_are_independent():
    x = _batch(1, 1, 28).expand(64, -1, -1, -1)
    weak = A.BatchAugment("grey28", "weak")(x, np.arange(64))
    strong0 = A.BatchAugment("grey28", "strong", n_ops=0, cutout=0)(x, np.arange(64))  # geometry only
    assert sum(torch.equal(weak[i], strong0[i]) for i in range(64)) < 20  # ~1/(2 * 7 * 7) by chance


def test_batch_test_policy_is_normalize():
    x = _batch(3, 3, 32)
    assert torch.equal(A.BatchAugment("rgb32", "test")(x, np.arange(3)), A.normalize(x, "rgb32"))
    flat = torch.full((4, 1, 28, 28), 77, dtype=torch.uint8)  # flips and reflect shifts keep a flat image
    assert torch.equal(A.BatchAugment("grey28", "weak")(flat, np.arange(4)), A.normalize(flat, "grey28"))
    assert torch.equal(A.BatchAugment("grey28", "strong", n_ops=0, cutout=0)(flat, np.arange(4)),
                       A.normalize(flat, "grey28"))


def test_batch_weak_flips_half_and_shifts_by_up_to_12_5_percent():
    n, h = 2000, 28
    x = torch.zeros(n, 1, h, h, dtype=torch.uint8)
    x[:, 0, 12, 9] = 255  # a one-hot pixel far enough from the border that reflection cannot copy it
    out = A.BatchAugment("grey28", "weak")(x, np.arange(n))
    hot = out[:, 0] > out.min()
    assert (hot.flatten(1).sum(1) == 1).all()  # the pixel moved, nothing else appeared
    rows, cols = hot.any(2).float().argmax(1) - 12, hot.any(1).float().argmax(1)
    flipped = cols >= h // 2
    dx = torch.where(flipped, cols - (h - 1 - 9), cols - 9)
    assert abs(flipped.float().mean().item() - 0.5) < 0.04
    assert set(rows.tolist()) == set(range(-3, 4)) and set(dx.tolist()) == set(range(-3, 4))  # int(0.125*28)
    counts = np.bincount(rows.numpy() + 3)
    assert counts.min() > 0.7 * n / 7  # uniform offsets
    ref = A.seeded_call(A.weak_transform("grey28"), x[0], 0)  # the per-sample op: one shifted pixel too
    assert int((ref > ref.min()).sum()) == 1


def test_batch_flip_and_translation_match_the_per_sample_ops():
    x = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    flip, u = np.arange(12) % 3 == 0, A.sample_uniform(np.arange(12), 9, 2)
    out = AB._b_flip_pad_crop(x, flip, u)
    for i in range(12):
        top, left = int(u[i, 0] * 9), int(u[i, 1] * 9)  # randint(0, 2 * 4 + 1)
        img = F.pad(x[i].flip(-1) if flip[i] else x[i], [4, 4, 4, 4], padding_mode="reflect")
        assert torch.equal(out[i], img[:, top : top + 32, left : left + 32])


def _op_reference(name, x, m):
    op, _, integer = A.FIXMATCH_OPS[name]
    return torch.stack([op(x[i], int(m[i]) if integer else float(m[i])) for i in range(len(x))]).float()


@pytest.mark.parametrize("name", list(A.FIXMATCH_OPS))
def test_batched_ops_match_the_per_sample_ops(name):
    rng = A.FIXMATCH_OPS[name][1]
    for c in (3, 1):
        x = torch.cat([_batch(6, c, 32, seed=c), torch.full((1, c, 32, 32), 90, dtype=torch.uint8)])
        u = np.linspace(0.02, 0.98, len(x))
        m = AB._magnitudes(name, u)
        got = AB._BATCH_OPS[name](x.float(), m)
        ref = _op_reference(name, x, m)
        diff = (got - ref).abs()
        # exact, or 1 grey level off in a few pixels (float rounding of blends, pixel-centre ties of warps)
        assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3, (name, c, diff.max(), (diff > 0).sum())
        assert torch.equal(got, got.round()) and got.min() >= 0 and got.max() <= 255  # uint8 values
        if name in ("AutoContrast", "Brightness", "Equalize", "Identity", "Posterize", "Solarize", "TranslateX",
                    "TranslateY"):
            assert diff.max() == 0, name
        if rng is not None:  # magnitudes span the op's range
            assert rng[0] <= m.min() < m.max() <= rng[1]


def test_batched_ops_on_hand_checkable_images():
    ops = AB._BATCH_OPS
    const = torch.full((2, 1, 8, 8), 200.0)
    assert torch.equal(ops["Solarize"](const, np.array([0.5, 0.9])),  # thresholds 128 and 230
                       torch.stack([torch.full((1, 8, 8), 55.0), const[1]]))
    m2 = np.array([0.5, 0.25])
    assert torch.equal(ops["Solarize"](const, np.zeros(2)), 255 - const)  # threshold 0: all inverted
    assert torch.equal(ops["Posterize"](torch.full((1, 1, 4, 4), 0b10110111 * 1.0), np.array([4])),
                       torch.full((1, 1, 4, 4), 0b10110000 * 1.0))
    assert torch.equal(ops["Brightness"](const, m2), torch.stack([const[0] * 0.5, const[1] * 0.25]))
    for name in ("Contrast", "Equalize", "AutoContrast", "Sharpness", "Color"):  # a flat image stays flat
        assert torch.equal(ops[name](const, m2), const), name
    two = torch.tensor([[60.0, 60.0], [100.0, 100.0]]).view(1, 1, 2, 2)
    stretched = ops["AutoContrast"](two, np.zeros(1))  # min -> 0, max -> 255 up to torchvision's float rounding
    assert torch.equal(stretched, F.autocontrast(two[0].to(torch.uint8)).float()[None])
    assert stretched[0, 0, 0].eq(0).all() and stretched[0, 0, 1].ge(254).all()
    colour = torch.tensor([200.0, 50.0, 50.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    grey = ops["Color"](colour, np.zeros(1))  # saturation 0: the grey image
    assert torch.equal(grey, torch.full_like(colour, int(0.2989 * 200 + 0.587 * 50 + 0.114 * 50)))
    # warps move a one-hot pixel by whole pixels and fill with 128
    dot = torch.zeros(1, 1, 9, 9)
    dot[0, 0, 4, 2] = 255
    out = ops["TranslateX"](dot, np.array([0.25]))  # int(0.25 * 9) = 2 pixels right
    assert out[0, 0, 4, 4] == 255 and out[0, 0, :, :2].eq(128).all() and int((out == 255).sum()) == 1
    out = ops["TranslateY"](dot, np.array([-0.12]))  # int(-1.08) = -1: one pixel up
    assert out[0, 0, 3, 2] == 255 and out[0, 0, -1].eq(128).all()
    rot = ops["Rotate"](dot, np.array([90.0]))  # counter-clockwise, about the centre
    assert torch.equal(rot, torch.rot90(dot, 1, dims=(-2, -1)))
    sheared = ops["ShearX"](dot, np.array([0.25]))  # x_src = x + m * (y + 0.5): row 4 shifts left by ~1
    ref = A.FIXMATCH_OPS["ShearX"][0](dot[0].to(torch.uint8), 0.25).float()
    assert torch.equal(sheared[0], ref)
    box = torch.zeros(1, 1, 5, 5)
    box[0, 0, 2, 2] = 13.0  # the SMOOTH kernel's centre weight 5/13, border untouched
    assert ops["Sharpness"](box, np.zeros(1))[0, 0, 2, 2] == 5.0  # factor 0: the blurred image
    assert ops["Sharpness"](box, np.zeros(1))[0, 0, 1, 1] == 1.0


def test_batch_cutout_square():
    n = 300
    x = torch.zeros(n, 3, 32, 32)
    u = A.sample_uniform(np.arange(n), 0, 3)
    out = AB._b_cutout(x.clone(), u, 0.5)
    mask = (out == 127).all(1)
    assert torch.equal(out, 127.0 * mask[:, None].expand_as(out).float())  # nothing else touched
    side = (u[:, 0] * 0.5 * 32).astype(int)  # Cutout's draws, as the per-sample op computes them
    y0 = np.maximum(0.0, u[:, 1] * 32 - side / 2).astype(int)
    x0 = np.maximum(0.0, u[:, 2] * 32 - side / 2).astype(int)
    r = np.arange(32)
    rows = (r >= y0[:, None]) & (r < (y0 + side)[:, None])
    cols = (r >= x0[:, None]) & (r < (x0 + side)[:, None])
    assert torch.equal(mask, torch.from_numpy(rows[:, :, None] & cols[:, None, :]))
    assert side.max() == 15 and side.min() == 0 and len(set(side)) == 16  # side up to 0.5 * 32, exclusive


@pytest.fixture
def one_thread():
    """Per-sample transforms on single images gain nothing from threads, and a busy 2-core machine makes
    thread hand-offs slow; run timing-heavy tests on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_batch_strong_statistics_close_to_the_per_sample_transform(one_thread):
    flat = torch.full((1, 28, 28), 90, dtype=torch.uint8)
    ref = A.normalize(flat, "grey28")
    per = torch.stack([A.seeded_call(A.strong_transform("grey28"), flat, s) for s in range(400)])
    bat = A.BatchAugment("grey28", "strong")(flat[None].expand(4000, -1, -1, -1), np.arange(4000))

    def stats(v):  # fractions of changed pixels and of changed images (RandAugment ops + Cutout)
        changed = (v - ref).abs().flatten(1).gt(1e-6)
        return np.array([changed.float().mean().item(), changed.any(1).float().mean().item()])

    # standard errors ~0.018 and ~0.011 (400 per-sample draws): measured ~0.235 and ~0.95 for both
    assert np.all(np.abs(stats(per) - stats(bat)) < [0.06, 0.04]), (stats(per), stats(bat))


def test_batch_simclr_crop_jitter_and_grayscale(one_thread):
    n = 1000
    # crop boxes: same distribution as _SameSizeResizedCrop's torch draws (mean crop area)
    u = A.sample_uniform(np.arange(n), 4, 40).reshape(n, 10, 4)
    top, left, ch, cw = AB._crop_boxes(u, 32, 32)
    assert (top >= 0).all() and (top + ch <= 32).all() and (left + cw <= 32).all() and (ch > 0).all()
    crop = AS._SameSizeResizedCrop(scale=(0.2, 1.0))
    torch.manual_seed(0)
    per = np.array([crop._params(32, 32) for _ in range(n)])
    areas, per_areas = ch * cw / 1024, per[:, 2] * per[:, 3] / 1024
    assert abs(areas.mean() - per_areas.mean()) < 0.025 and 0.19 < areas.min() and areas.max() <= 1
    # the resized crop itself: torchvision's resized_crop within one grey level
    x = _batch(40, 3, 32)
    got = AB._b_resized_crop(x.float(), top[:40], left[:40], ch[:40], cw[:40], np.zeros(40, bool))
    ref = torch.stack([F.resized_crop(x[i], int(top[i]), int(left[i]), int(ch[i]), int(cw[i]), [32, 32],
                                      antialias=True) for i in range(40)]).float()
    assert (got - ref).abs().max() <= 1
    # hue: torchvision's adjust_hue within one grey level
    shifts = np.linspace(-0.5, 0.5, 40)
    ref = torch.stack([F.adjust_hue(x[i], float(shifts[i])) for i in range(40)]).float()
    diff = (AB._b_hue(x.float(), shifts) - ref).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    # jitter p 0.8 and grayscale p 0.2 on a flat colour image (a crop of a flat image is flat)
    flat = torch.tensor([150, 60, 90], dtype=torch.uint8).view(1, 3, 1, 1).expand(n, 3, 32, 32)
    out = A.BatchAugment("rgb32", "simclr")(flat, np.arange(n))
    mean, std = AP.stats("rgb32", 3)
    pix = ((out * std + mean) * 255).round()[:, :, 0, 0]
    assert torch.equal(out, out[:, :, :1, :1].expand_as(out))
    grey = (pix[:, 0] == pix[:, 1]) & (pix[:, 1] == pix[:, 2])
    unchanged = (pix == torch.tensor([150.0, 60.0, 90.0])).all(1)
    assert abs(grey.float().mean().item() - 0.2) < 0.03
    assert abs(unchanged.float().mean().item() - 0.2 * 0.8) < 0.03  # no jitter, no grayscale
    g = A.BatchAugment("grey28", "simclr")(torch.full((n, 1, 28, 28), 100, dtype=torch.uint8), np.arange(n))
    level = A.normalize(torch.full((1, 1, 1), 100, dtype=torch.uint8), "grey28")[0, 0, 0]
    assert abs((g[:, 0, 0, 0] != level).float().mean().item() - 0.8) < 0.04  # jitter p 0.8 moves the level


def test_simclr_crop_scale_in_both_paths():
    n = 400
    u = A.sample_uniform(np.arange(n), 4, 40).reshape(n, 10, 4)
    top, left, ch, cw = AB._crop_boxes(u, 28, 28, (0.6, 1.0))
    areas = ch * cw / 784
    assert areas.min() > 0.55 and areas.max() <= 1 and abs(areas.mean() - 0.8) < 0.05
    # the option reaches the batched augmentation: a weak crop keeps more of a centred square
    x = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 4:24, 4:24] = 255
    # share of each view that the square fills: ~0.51 (400 / 784) for near-full crops, anything for small ones
    kept = {s: (A.BatchAugment("grey28", "simclr", crop_scale=s)(x, np.arange(n)) > 0).float().mean((1, 2, 3))
            for s in ((0.2, 1.0), (0.9, 1.0))}
    assert kept[(0.9, 1.0)].std() < 0.5 * kept[(0.2, 1.0)].std()
    assert abs(kept[(0.9, 1.0)].mean().item() - 0.51) < 0.08
    assert "crop_scale=(0.9, 1.0)" in repr(A.BatchAugment("grey28", "simclr", crop_scale=(0.9, 1.0)))
    t = A.simclr_transform("grey28", crop_scale=(0.9, 1.0))
    crop = next(step for step in t.steps if isinstance(step, AS._SameSizeResizedCrop))
    assert crop.scale == (0.9, 1.0)
    assert A.simclr_transform("grey28").steps[1].scale == (0.2, 1.0)
    for bad in ((0.0, 1.0), (0.5, 0.4), (0.5, 1.2), 0.5, ("a", 1)):
        with pytest.raises(ValueError, match="crop_scale"):
            A.check_crop_scale(bad)
        with pytest.raises(ValueError, match="crop_scale"):
            A.BatchAugment("grey28", "simclr", crop_scale=bad)


def test_batch_augment_validation():
    with pytest.raises(ValueError, match="imagenet"):
        A.BatchAugment("imagenet", "weak")
    with pytest.raises(ValueError, match="unknown image kind 'cifar'"):
        A.BatchAugment("cifar", "weak")
    with pytest.raises(ValueError, match="unknown policy 'medium'"):
        A.BatchAugment("grey28", "medium")
    with pytest.raises(ValueError, match="n_ops"):
        A.BatchAugment("grey28", "strong", n_ops=-1)
    with pytest.raises(ValueError, match="cutout"):
        A.BatchAugment("grey28", "strong", cutout=1.5)
    aug = A.BatchAugment("grey28", "strong")
    assert "strong" in repr(aug)
    with pytest.raises(ValueError, match="uint8"):
        aug(torch.zeros(2, 1, 28, 28), np.arange(2))
    with pytest.raises(ValueError, match="uint8"):
        aug(torch.zeros(1, 28, 28, dtype=torch.uint8), np.arange(1))
    with pytest.raises(ValueError, match="2 seeds for a batch of 3"):
        aug(torch.zeros(3, 1, 28, 28, dtype=torch.uint8), np.arange(2))
    with pytest.raises(ValueError, match="non-negative"):
        aug(torch.zeros(1, 1, 28, 28, dtype=torch.uint8), np.array([-3]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("policy", A.BATCH_POLICIES)
def test_batch_on_cuda_matches_cpu(policy):
    x, s = _batch(16, 3, 32), np.arange(16)
    aug = A.BatchAugment("rgb32", policy)
    out = aug(x.cuda(), torch.from_numpy(s).cuda())
    assert out.device.type == "cuda" and out.dtype == torch.float32
    off = ((out.cpu() - aug(x, s)).abs() > 1.5 / 255 / 0.24).float().mean().item()  # > 1 grey level off
    assert off < 0.01, off  # float rounding may differ between devices, rarely by more than one level
    for i in (0, 7):
        torch.testing.assert_close(out[i], aug(x[i : i + 1].cuda(), s[i : i + 1])[0], atol=1e-5, rtol=0)



@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("policy,opts", [("strong", {"cutout_side": "fixed"}), ("simclr", {"jitter_strength": 1.0})])
def test_batch_options_on_cuda_match_cpu(policy, opts):
    x, s = _batch(16, 3, 32), np.arange(16)
    aug = A.BatchAugment("rgb32", policy, **opts)
    out = aug(x.cuda(), torch.from_numpy(s).cuda())
    off = ((out.cpu() - aug(x, s)).abs() > 1.5 / 255 / 0.24).float().mean().item()
    assert off < 0.01, off

def test_batch_timing_print(one_thread):
    """Per-sample vs batched strong augmentation of 512 images (printed, not asserted; run with -s)."""
    import time

    for kind, c, h in BATCH_KINDS:
        x = _batch(1, c, h).expand(512, -1, -1, -1).contiguous()
        per, aug = A.strong_transform(kind), A.BatchAugment(kind, "strong")
        t0 = time.perf_counter()
        torch.stack([per(img) for img in x])
        t1 = time.perf_counter()
        aug(x, np.arange(512))
        t2 = time.perf_counter()
        print(f"\nstrong {kind} 512x{c}x{h}x{h} (1 thread): per-sample {1e3 * (t1 - t0):.0f} ms, "
              f"batched {1e3 * (t2 - t1):.1f} ms")


# ----------------------------------------------------------------------------------------------------------
# options: Cutout side (random / fixed), SimCLR jitter strength; splitmix64
# ----------------------------------------------------------------------------------------------------------
def _cutout_boxes(out, fill_value):
    """Per image: (rows, cols) extent of the pixels equal to ``fill_value`` in every channel, or None."""
    boxes = []
    for img in out:
        mask = (img == fill_value).all(0)
        if not mask.any():
            boxes.append(None)
            continue
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert int(mask.sum()) == h * w  # one square
        boxes.append((h, w, int(rows.min()), int(cols.min())))
    return boxes


@pytest.mark.parametrize("size,side", [(32, 16), (28, 14)])
def test_cutout_fixed_side_per_sample(size, side):
    img = torch.zeros(3, size, size, dtype=torch.uint8)
    t = A.Cutout(0.5, side="fixed")
    outs = [A.seeded_call(t, img, s) for s in range(40)]
    for s, box in enumerate(_cutout_boxes(outs, 127)):
        torch.manual_seed(s)  # the same draws as the transform: side (ignored), centre row, centre column
        torch.rand(())
        cy, cx = float(torch.rand(())) * size, float(torch.rand(())) * size
        y0, x0 = int(max(0.0, cy - side / 2)), int(max(0.0, cx - side / 2))
        assert box == (min(size, y0 + side) - y0, min(size, x0 + side) - x0, y0, x0), s
    assert max(b[0] for b in _cutout_boxes(outs, 127)) == side  # 16 px at 32 px, scaled with the image
    assert "side='fixed'" in repr(t) and "side" not in repr(A.Cutout(0.5))
    # the strong transform passes the option on; with no RandAugment ops a flat image shows only the square
    flat = torch.full((3, 32, 32), 90, dtype=torch.uint8)
    ref = A.normalize(flat, "rgb32")
    areas = {mode: [int((A.seeded_call(A.strong_transform("rgb32", n_ops=0, cutout_side=mode), flat, s) != ref)
                        .any(0).sum()) for s in range(60)] for mode in A.CUTOUT_SIDES}
    assert min(areas["fixed"]) > 0 and max(areas["fixed"]) == 256 and areas["fixed"].count(256) > 10
    assert min(areas["random"]) == 0 and max(areas["random"]) < 256  # random side, 15 px at most
    with pytest.raises(ValueError, match="cutout_side"):
        A.strong_transform("rgb32", cutout_side="big")
    with pytest.raises(ValueError, match="cutout_side"):
        A.Cutout(0.5, side="large")


def test_cutout_fixed_side_batched():
    n = 300
    u = A.sample_uniform(np.arange(n), 0, 3)
    out = AB._b_cutout(torch.zeros(n, 3, 32, 32), u, 0.5, side="fixed")
    y0 = np.maximum(0.0, u[:, 1] * 32 - 8).astype(int)  # side 16 = 0.5 * 32, whatever u[:, 0]
    x0 = np.maximum(0.0, u[:, 2] * 32 - 8).astype(int)
    for i, box in enumerate(_cutout_boxes(out, 127)):
        assert box == (min(32, y0[i] + 16) - y0[i], min(32, x0[i] + 16) - x0[i], y0[i], x0[i]), i
    np.testing.assert_array_equal(AP.cutout_sides(u[:, 0], 0.5, 28, "fixed"), np.full(n, 14.0))
    # through BatchAugment: a flat image with no RandAugment ops shows only the square
    flat = torch.full((200, 3, 32, 32), 90, dtype=torch.uint8)
    ref = A.normalize(flat[:1], "rgb32")
    areas = {mode: (A.BatchAugment("rgb32", "strong", n_ops=0, cutout_side=mode)(flat, np.arange(200)) != ref)
             .any(1).flatten(1).sum(1) for mode in A.CUTOUT_SIDES}
    assert areas["fixed"].min() > 0 and areas["fixed"].max() == 256 and (areas["fixed"] == 256).sum() > 40
    assert areas["random"].min() == 0 and areas["random"].max() < 256
    assert "cutout_side='fixed'" in repr(A.BatchAugment("rgb32", "strong", cutout_side="fixed"))
    with pytest.raises(ValueError, match="cutout_side"):
        A.BatchAugment("rgb32", "strong", cutout_side="big")


def test_simclr_jitter_strength_in_both_paths(one_thread):
    """A flat grey image: the crop and contrast keep it flat, brightness scales it by ``U(1 - 0.8 s, 1 + 0.8 s)``
    with probability 0.8, so its level spans ``100 * [1 - 0.8 s, 1 + 0.8 s]``."""
    def levels(out):
        mean, std = AP.stats("grey28", 1)
        return ((out[:, :, 0, 0] * std[:, 0, 0] + mean[:, 0, 0]) * 255).round().flatten()

    flat = torch.full((1, 28, 28), 100, dtype=torch.uint8)
    for s, (lo, hi) in ((0.5, (60, 140)), (1.0, (20, 180))):
        bat = levels(A.BatchAugment("grey28", "simclr", jitter_strength=s)(flat[None].expand(2000, -1, -1, -1),
                                                                            np.arange(2000)))
        per = levels(torch.stack([A.seeded_call(A.simclr_transform("grey28", jitter_strength=s), flat, k)
                                  for k in range(300)]))
        for v in (bat, per):
            assert v.min() >= lo - 2 and v.max() <= hi, (s, v.min(), v.max())  # truncated float blends
            assert v.min() < lo + 10 and v.max() > hi - 10, (s, v.min(), v.max())  # the whole range is used
            assert abs((v != 100).float().mean().item() - 0.8) < 0.07  # jitter p 0.8
    for out in (A.BatchAugment("grey28", "simclr", jitter_strength=0)(flat[None].expand(50, -1, -1, -1),
                                                                       np.arange(50)),
                torch.stack([A.seeded_call(A.simclr_transform("grey28", jitter_strength=0), flat, k)
                             for k in range(50)])):
        assert (levels(out) == 100).all()  # strength 0: no jitter
    # colour kinds: ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s); the default is SimCLR's CIFAR strength 0.5
    assert AP.SimCLRPolicy().jitter == (0.4, 0.4, 0.4, 0.1)
    assert AP.simclr_policy("imagenet", jitter_strength=1.0).jitter == (0.8, 0.8, 0.8, 0.2)
    t = A.simclr_transform("imagenet", jitter_strength=1.0)
    jitter = next(step for step in t.steps if "RandomApply" in type(step).__name__).transforms[0]
    assert np.allclose(jitter.brightness, (0.2, 1.8)) and np.allclose(jitter.hue, (-0.2, 0.2))
    assert "jitter_strength=1.0" in repr(A.BatchAugment("rgb32", "simclr", jitter_strength=1.0))
    rgb = _batch(8, 3, 32)
    assert not torch.equal(A.BatchAugment("rgb32", "simclr", jitter_strength=1.0)(rgb, np.arange(8)),
                           A.BatchAugment("rgb32", "simclr")(rgb, np.arange(8)))
    for bad in (-0.1, 3.0, "1"):
        with pytest.raises(ValueError, match="jitter_strength"):
            A.simclr_transform("rgb32", jitter_strength=bad)
        with pytest.raises(ValueError, match="jitter_strength"):
            A.BatchAugment("rgb32", "simclr", jitter_strength=bad)


@pytest.mark.parametrize("batched", [True, False])
def test_views_pass_the_strong_and_simclr_options(batched):
    from uslkit.train.batches import Views

    ds = ImageDataset(name="x", split="train", images=np.zeros((4, 32, 32, 3), np.uint8), labels=[0, 1, 0, 1],
                      class_names=["a", "b"], ids=[0, 1, 2, 3])
    fm = Views(ds, ("weak", "strong"), batched=batched, cutout_side="fixed")
    sc = Views(ds, ("simclr", "simclr"), batched=batched, jitter_strength=1.0, crop_scale=(0.5, 1.0))
    if batched:
        assert fm.augs[1].strong.cutout_side == "fixed"
        assert sc.augs[0].simclr.jitter_strength == 1.0 and sc.augs[1].crop_scale == (0.5, 1.0)
    else:
        assert [s.side for s in fm.dataset.transform.t2.steps if isinstance(s, A.Cutout)] == ["fixed"]
        jitter = next(s for s in sc.dataset.transform.t1.steps if "RandomApply" in type(s).__name__).transforms[0]
        assert np.allclose(jitter.brightness, (0.2, 1.8))
    assert "fixed" not in repr(Views(ds, ("weak", "strong"), batched=batched).dataset.transform)
    with pytest.raises(ValueError, match="cutout_side"):
        Views(ds, ("weak", "strong"), batched=batched, cutout_side="big")
    with pytest.raises(ValueError, match="jitter_strength"):
        Views(ds, ("simclr",), batched=batched, jitter_strength=-1)


def test_splitmix64_one_definition():
    from uslkit import _rng

    assert _rng.splitmix64(0) == 0xE220A8397B1DCDAF  # the published first outputs of splitmix64 from state 0
    assert _rng.splitmix64(_rng.GOLDEN) == 0x6E789E6AA1B965F4
    x = np.random.default_rng(0).integers(0, 2**63, 1000, dtype=np.int64).astype(np.uint64) * np.uint64(2) + \
        np.arange(1000, dtype=np.uint64)
    np.testing.assert_array_equal(_rng.splitmix64_np(x), np.array([_rng.splitmix64(int(v)) for v in x],
                                                                   dtype=np.uint64))
    assert _rng.splitmix64(2**64 + 5) == _rng.splitmix64(5)  # modulo 2^64
