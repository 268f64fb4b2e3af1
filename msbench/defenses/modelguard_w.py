"""ModelGuard-W (Tang et al., "ModelGuard: information-theoretic defense against model extraction
attacks", USENIX Security 2024): per query the linear program

    min_{y~}  log(y + 1e-6)^T y~
    s.t.      y~ >= 0,  sum_k y~_k = 1,  ||y~ - y||_1 <= epsilon,
              y~_t - y~_j >= 1e-4 for every j != t = argmax y      (the top-1 is kept)

(the authors' ``defenses/victim/mld.py``; the L1 norm through slack variables z >= |y~ - y|). It
moves mass towards the classes the victim finds least likely, as far as the budget and the top-1
constraint allow. The programs of a batch's queries share no variable, so msbench solves them as
one block-diagonal LP with scipy's HiGHS (``scipy.optimize.linprog``); the optimum of each block is
that of its own LP (a test compares with one LP per query). Solver tolerances leave entries off by
about 1e-9; the answer is clipped at 0 and renormalised. A query whose LP is infeasible (top-1 and
runner-up closer than the margin and a budget too small to separate them) is answered unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import linprog
from torch import nn

from msbench.defenses.base import L1_GRID, OutputDefense, VictimContext, renormalise
from msbench.registry import register_defense

LOG_OFFSET = 1e-6  # c = log(y + 1e-6), as the authors' code, so a zero probability has a finite cost
TOP1_MARGIN = 1e-4  # y~_t - y~_j >= margin, the authors' value


def lp_matrices(y: np.ndarray, epsilon: float) -> dict:
    """The block LP of a batch y (N, K) over x = [y~ (N K), z (N K)], in linprog's form."""
    n, k = y.shape
    nk = n * k
    eye = sparse.identity(nk, format="csr")
    rows = np.repeat(np.arange(n), k)
    per_query = sparse.csr_matrix((np.ones(nk), (rows, np.arange(nk))), shape=(n, nk))  # sums each query's k entries
    top1 = y.argmax(axis=1)
    others = [(i, j) for i in range(n) for j in range(k) if j != top1[i]]  # y~_ij - y~_it <= -margin
    m = len(others)
    cols_j = np.array([i * k + j for i, j in others], dtype=int).reshape(-1)
    cols_t = np.array([i * k + top1[i] for i, _ in others], dtype=int).reshape(-1)
    margin = sparse.csr_matrix((np.r_[np.ones(m), -np.ones(m)],
                                (np.r_[np.arange(m), np.arange(m)], np.r_[cols_j, cols_t])),
                               shape=(m, nk))
    zeros_n, zeros_m = sparse.csr_matrix((n, nk)), sparse.csr_matrix((m, nk))
    a_ub = sparse.vstack([sparse.hstack([-eye, -eye]),        # y - y~ <= z
                          sparse.hstack([eye, -eye]),         # y~ - y <= z
                          sparse.hstack([zeros_n, per_query]),  # sum_k z <= epsilon
                          sparse.hstack([margin, zeros_m])], format="csr")
    flat = y.reshape(-1)
    b_ub = np.r_[-flat, flat, np.full(n, epsilon), np.full(m, -TOP1_MARGIN)]
    a_eq = sparse.hstack([per_query, zeros_n], format="csr")
    c = np.r_[np.log(flat + LOG_OFFSET), np.zeros(nk)]
    bounds = [(0.0, 1.0)] * nk + [(0.0, None)] * nk
    return {"c": c, "A_ub": a_ub, "b_ub": b_ub, "A_eq": a_eq, "b_eq": np.ones(n), "bounds": bounds}


def solve_block(y: np.ndarray, epsilon: float) -> np.ndarray | None:
    """y~ (N, K) of the batch's LPs solved together, or None when HiGHS finds no optimum."""
    result = linprog(method="highs", **lp_matrices(y, epsilon))
    if result.status != 0:
        return None
    return result.x[: y.size].reshape(y.shape)


def modelguard_w(y: torch.Tensor, epsilon: float) -> torch.Tensor:
    """ModelGuard-W's answers for a batch: one block LP; query by query only if the block is infeasible."""
    values = y.detach().double().cpu().numpy()
    solved = solve_block(values, epsilon)
    if solved is None:
        solved = np.stack([row if (one := solve_block(row[None], epsilon)) is None else one[0] for row in values])
    return renormalise(torch.from_numpy(solved)).to(dtype=y.dtype, device=y.device)


class ModelGuardWVictim(nn.Module):
    def __init__(self, base: nn.Module, epsilon: float):
        super().__init__()
        self.base, self.epsilon = base, epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        return y if self.epsilon == 0 or len(y) == 0 else modelguard_w(y, self.epsilon)


@register_defense("modelguard_w")
class ModelGuardW(OutputDefense):
    """ModelGuard-W (Tang et al. 2024): per query an LP moving mass to unlikely classes in an L1 ball, top-1 kept."""

    label = "ModelGuard-W"
    tunable = "epsilon"
    tunable_grid = L1_GRID  # strong to weak
    cost_model = {"single": "M_f + LP(2K)", "batch": "M_f + LP(2BK)"}

    @dataclass
    class Config:
        epsilon: float = 1.0  # L1 budget; benign matching tunes it

    @staticmethod
    def check_config(config: "ModelGuardW.Config") -> tuple[str, str] | None:
        if not (math.isfinite(config.epsilon) and 0 <= config.epsilon <= 2):
            return "epsilon", f"expected an L1 budget in [0, 2], got {config.epsilon}"
        return None

    def build(self, base: nn.Module, ctx: VictimContext) -> nn.Module:
        return ModelGuardWVictim(base, self.config.epsilon)
