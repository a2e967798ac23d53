"""The empirical neural tangent kernel of the active-learning head at initialisation, and kernel regression
with it (paper 003, Sec. 3.1, eqs. 2-3; Jacot et al. 2018).

The head is ``f(x) = W2 relu(BN(W1 x + b1)) + b2`` on L2-normalised frozen features, its BatchNorm in eval mode
at initialisation (running mean 0, variance 1, weight 1, bias 0). The kernel is the Jacobian product of eq. 2,
``K(x, x') = grad_theta f(x) . grad_theta f(x')``, averaged over the outputs (the trace of the C x C block):
the cross-output blocks have zero mean over the initialisation and are dropped, so every output is one
kernel regression with the same scalar kernel. For this two-layer network the kernel has a closed form in
matrix products (no per-sample Jacobians):

    K = H H^T + 1 + (X X^T + 1) * (A D1 A^T) + (A*N) D0 (A*N)^T + A D0 A^T

with ``N`` the normalised pre-activations, ``A = 1[gamma N + beta > 0]``, ``H`` the hidden outputs,
``D0 = diag(mean_c W2[c]^2)`` and ``D1 = D0 * (gamma c_bn)^2``, ``c_bn = 1 / sqrt(1 + eps)``.

Eq. 3 at convergence (``t -> infinity``): ``f(x) = f0(x) + K(x, X) K(X, X)^-1 (Y - f0(X))``, with a small ridge
``reg * mean(diag K)`` added to ``K(X, X)`` for a stable solve (deviation: the paper states no ridge).
"""

from __future__ import annotations

import numpy as np

__all__ = ["InitMLP", "ntk_regression"]


class InitMLP:
    """A head at initialisation (PyTorch's default init, seeded): its outputs ``f0`` and its NTK.

    Args:
        dim: input dimension. hidden: hidden width. outputs: number of outputs (classes or CPL clusters).
        seed: the initialisation.
    """

    def __init__(self, dim: int, hidden: int, outputs: int, *, seed: int = 0):
        import torch

        from .head import one_thread

        with one_thread(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.BatchNorm1d(hidden),
                                           torch.nn.ReLU(), torch.nn.Linear(hidden, outputs)).eval()
        lin1, bn, _, lin2 = self.net
        self.w1 = lin1.weight.detach().double().numpy()
        self.b1 = lin1.bias.detach().double().numpy()
        self.c_bn = 1.0 / np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
        self.mu_bn = bn.running_mean.detach().double().numpy()
        self.gamma = bn.weight.detach().double().numpy()
        self.beta = bn.bias.detach().double().numpy()
        self.w2 = lin2.weight.detach().double().numpy()
        self.b2 = lin2.bias.detach().double().numpy()
        self.d0 = (self.w2 ** 2).mean(0)  # mean over outputs of W2[c, j]^2

    def _parts(self, x):
        x = np.asarray(x, dtype=np.float64)
        nrm = (x @ self.w1.T + self.b1 - self.mu_bn) * self.c_bn  # BN-normalised pre-activation
        pre = self.gamma * nrm + self.beta
        a = (pre > 0).astype(np.float64)
        return x, nrm, a, pre * a

    def outputs(self, x) -> np.ndarray:
        """``f0(x)``: ``(n, outputs)`` float64."""
        return self._parts(x)[3] @ self.w2.T + self.b2

    def kernel(self, xa, xb=None) -> np.ndarray:
        """The output-averaged NTK ``(na, nb)`` float64 between rows of ``xa`` and ``xb`` (default ``xa``)."""
        pa = self._parts(xa)
        pb = pa if xb is None else self._parts(xb)
        (x1, n1, a1, h1), (x2, n2, a2, h2) = pa, pb
        d1 = self.d0 * (self.gamma * self.c_bn) ** 2
        k = h1 @ h2.T + 1.0                                   # W2, b2
        k += (x1 @ x2.T + 1.0) * ((a1 * d1) @ a2.T)             # W1, b1
        k += ((a1 * n1) * self.d0) @ (a2 * n2).T               # BN weight
        k += (a1 * self.d0) @ a2.T                             # BN bias
        return k


def ntk_regression(model: InitMLP, x_train, y_train, x_eval, *, reg: float = 1e-6) -> np.ndarray:
    """Eq. 3 at convergence: the predictions ``(n_eval, outputs)`` of the head trained to zero MSE on
    ``(x_train, y_train)`` (``y_train`` ``(m, outputs)``, e.g. one-hot) in the NTK regime."""
    k_tt = model.kernel(x_train)
    k_et = model.kernel(x_eval, x_train)
    ridge = reg * float(np.mean(np.diag(k_tt)))
    resid = np.asarray(y_train, dtype=np.float64) - model.outputs(x_train)
    alpha = np.linalg.solve(k_tt + ridge * np.eye(len(k_tt)), resid)
    return model.outputs(x_eval) + k_et @ alpha
