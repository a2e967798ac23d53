"""LARS against a hand-computed update, SimCLR's exclusions, and a few steps reducing a loss."""

import math

import pytest
import torch

from uslkit.train.optim import LARS, lars_groups


def test_lars_step_hand_computed():
    # w = (3, 4): ||w|| = 5; grad (0.6, 0.8), weight decay 0.1 -> g = (0.9, 1.2), ||g|| = 1.5
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    opt = LARS([w], lr=0.5, momentum=0.9, weight_decay=0.1, eta=0.01)
    w.grad = torch.tensor([0.6, 0.8])
    opt.step()
    ratio = 0.01 * 5 / 1.5
    v1 = 0.5 * ratio * torch.tensor([0.9, 1.2])
    assert torch.allclose(w.detach(), torch.tensor([3.0, 4.0]) - v1, atol=1e-7)
    # second step: momentum buffer carries the first update
    w0 = w.detach().clone()
    w.grad = torch.tensor([0.6, 0.8])
    opt.step()
    g = torch.tensor([0.6, 0.8]) + 0.1 * w0
    ratio2 = 0.01 * w0.norm() / g.norm()
    v2 = 0.9 * v1 + 0.5 * ratio2 * g
    assert torch.allclose(w.detach(), w0 - v2, atol=1e-7)


def test_lars_nesterov_and_zero_norms():
    w = torch.tensor([1.0, 0.0], requires_grad=True)
    opt = LARS([w], lr=1.0, momentum=0.5, eta=0.1, nesterov=True)
    w.grad = torch.tensor([2.0, 0.0])
    opt.step()
    # ratio 0.1 * 1 / 2 = 0.05: v = 0.05 * g = (0.1, 0); Nesterov update = 0.5 v + 0.05 g = (0.15, 0)
    assert torch.allclose(w.detach(), torch.tensor([0.85, 0.0]))
    z = torch.zeros(3, requires_grad=True)  # ||w|| = 0: ratio 1 (plain SGD step)
    opt = LARS([z], lr=0.1, momentum=0.0)
    z.grad = torch.ones(3)
    opt.step()
    assert torch.allclose(z.detach(), torch.full((3,), -0.1))


def test_lars_groups_exclude_bias_and_bn_from_decay_and_adaptation():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(2, 2))
    net[3].bias.requires_grad_(False)
    groups = lars_groups(net, 1e-6)
    assert [len(g["params"]) for g in groups] == [2, 3]  # conv.w, lin.w | conv.b, bn.w, bn.b (frozen lin.b out)
    assert groups[0]["adapt"] and groups[0]["weight_decay"] == 1e-6
    assert not groups[1]["adapt"] and groups[1]["weight_decay"] == 0.0
    b = torch.tensor([1.0, 2.0], requires_grad=True)  # excluded tensor: plain momentum SGD
    opt = LARS([{"params": [b], "adapt": False, "weight_decay": 0.0}], lr=0.1, momentum=0.9, weight_decay=0.5)
    for _ in range(2):
        b.grad = torch.tensor([1.0, 1.0])
        opt.step()
    assert torch.allclose(b.detach(), torch.tensor([1.0, 2.0]) - 0.1 - 0.19)


def test_lars_errors():
    w = torch.zeros(2, requires_grad=True)
    for kw, match in ((dict(lr=-1), "lr"), (dict(lr=0.1, momentum=1.0), "momentum"),
                      (dict(lr=0.1, weight_decay=-1), "weight_decay"), (dict(lr=0.1, eta=0), "eta")):
        with pytest.raises(ValueError, match=match):
            LARS([w], **kw)


def test_lars_reduces_a_loss():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 3))
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    opt = LARS(lars_groups(net, 1e-6), lr=2.0, momentum=0.9)
    loss_fn = torch.nn.functional.cross_entropy
    first = loss_fn(net(x), y).item()
    for _ in range(60):
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()
    last = loss_fn(net(x), y).item()
    assert math.isfinite(last) and last < 0.7 * first
