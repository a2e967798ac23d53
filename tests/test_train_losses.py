"""Losses against hand-computed values and an independent loop implementation; a few steps reduce them."""

import math

import pytest
import torch
import torch.nn.functional as F

from uslkit.train.losses import fixmatch_loss, nt_xent


def test_nt_xent_hand_computed():
    # two images, identical views: every anchor has its positive at cosine 1 and two negatives at cosine 0
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = nt_xent(z, z.clone(), temperature=1.0)
    assert loss.item() == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)
    # temperature scales the similarities: log(1 + 2 e^{-1/t})
    assert nt_xent(z, z.clone(), temperature=0.5).item() == pytest.approx(math.log(1 + 2 * math.exp(-2)), rel=1e-6)


def _nt_xent_loop(z1, z2, t):
    z = F.normalize(torch.cat([z1, z2]), dim=1).double()
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        num = math.exp(float(z[i] @ z[pos]) / t)
        den = sum(math.exp(float(z[i] @ z[j]) / t) for j in range(2 * n) if j != i)
        total += -math.log(num / den)
    return total / (2 * n)


def test_nt_xent_matches_loop_and_is_scale_invariant():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert nt_xent(z1, z2, temperature=0.3).item() == pytest.approx(_nt_xent_loop(z1, z2, 0.3), rel=1e-5)
    assert nt_xent(3 * z1, z2, temperature=0.3).item() == pytest.approx(_nt_xent_loop(z1, z2, 0.3), rel=1e-5)


def test_nt_xent_errors():
    with pytest.raises(ValueError, match="same"):
        nt_xent(torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.ones(2, 3), torch.ones(2, 3), temperature=0)


def test_fixmatch_loss_hand_computed():
    lx = torch.tensor([[2.0, 0.0]])
    y = torch.tensor([0])
    weak = torch.tensor([[10.0, 0.0], [0.0, 0.0]])  # confident (p = 0.99995) and not (p = 0.5)
    strong = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    loss, st = fixmatch_loss(lx, y, weak, strong, threshold=0.95, lambda_u=2.0)
    lxv = math.log(1 + math.exp(-2))
    luv = math.log(2) / 2  # CE([0, 0], class 0) for the confident one, divided by the whole batch of 2
    assert st["loss_x"].item() == pytest.approx(lxv, rel=1e-6)
    assert st["loss_u"].item() == pytest.approx(luv, rel=1e-6)
    assert st["mask"].item() == 0.5
    assert st["pseudo_labels"].tolist() == [0, 0]
    assert st["confident"].tolist() == [True, False]
    assert loss.item() == pytest.approx(lxv + 2.0 * luv, rel=1e-6)


def test_fixmatch_pseudo_labels_carry_no_gradient():
    weak = torch.tensor([[5.0, 0.0]], requires_grad=True)
    strong = torch.tensor([[0.0, 1.0]], requires_grad=True)
    loss, _ = fixmatch_loss(torch.zeros(1, 2, requires_grad=True), torch.tensor([1]), weak, strong, threshold=0.5)
    loss.backward()
    assert weak.grad is None or torch.count_nonzero(weak.grad) == 0
    assert torch.count_nonzero(strong.grad) > 0


@pytest.mark.parametrize("which", ["nt_xent", "fixmatch"])
def test_a_few_steps_reduce_the_loss(which):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(16, 6)
    noise = 0.05 * torch.randn(16, 6)
    y = torch.randint(0, 4, (16,))

    def loss_fn():
        if which == "nt_xent":
            return nt_xent(net(x), net(x + noise), temperature=0.5)
        out = net(torch.cat([x[:4], x, x + noise]))
        return fixmatch_loss(out[:4], y[:4], out[4:20], out[20:], threshold=0.3)[0]

    first = loss_fn().item()
    for _ in range(30):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    assert loss_fn().item() < 0.8 * first
