"""Closed-form downlink beamformers and the structure of the optimal one (Zhang et al. 2022), batched.

Every function takes the channels of a :class:`~mimo_l2o.problems.beamforming.BeamformingProblem` and
returns beamformers ``W [batch, cells, antennas, users per cell]`` (or directions of unit norm), one
tensor operation for the whole batch and every cell:

* :func:`mrt`, :func:`zf` (eq. 24), :func:`rzf`: ``W_c = d_c H_c``, ``d_c H_c (H_cᴴH_c)⁻¹`` and
  ``d_c (H_c H_cᴴ + K σ²/P_c I)⁻¹ H_c`` from BS ``c``'s channels to its own users ``H_c [N, K]``, the
  common scale ``d_c`` putting BS ``c`` on its budget;
* :func:`optimal_structure` (eq. 7, with ``q_j`` inside the sum as in the paper's ref. [23]; eq. 7
  prints ``q_k``): ``w_k = √p_k (I + Σ_j q_j/σ² h_j h_jᴴ)⁻¹ h_k / ‖·‖`` from the powers ``p`` and the
  virtual uplink powers ``q``; :func:`reduced_structure` is the same in the ``K``-dimensional basis
  of eq. (23);
* :func:`dual_uplink_powers`: the ``q`` of uplink-downlink duality for given beamformers (the uplink
  with the beamformers' directions as receivers reaches the downlink's SINRs, and ``Σq = Σp``);
* :func:`slnr_directions` (eq. 32) and :func:`slnr_powers` (the power step of eq. 31) for multicell
  beamforming without inter-cell signalling, and :func:`slnr_alternating`, their alternation.

Channels are stored as rows: ``channel[b, c, u]`` holds the entries of ``h_{c,u}`` (BS ``c`` to user
``u``), so ``h_{c,u}ᴴ w = Σ_n conj(channel[b, c, u, n]) w[n]``. User ``u = c·K + k`` is user ``k`` of
cell ``c``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor

from mimo_l2o.components import Objective, Solver
from mimo_l2o.problems import BEAMFORMING
from mimo_l2o.problems.beamforming import BeamformingProblem, bs_power
from mimo_l2o.registry import SOLVERS


def own_channels(problem: BeamformingProblem) -> Tensor:
    """``H [batch, cells, antennas, users per cell]``: column ``k`` of ``H[:, c]`` is ``h_{c, c·K+k}``,
    BS ``c``'s channel to its own user ``k`` (the paper's ``H_D = [h_1, …, h_K]`` per cell)."""
    b, c, _, n = problem.channel.shape
    k = problem.users_per_cell
    own = problem.channel.reshape(b, c, c, k, n)[:, torch.arange(c), torch.arange(c)]  # [b, c, k, n]
    return own.transpose(-1, -2)


def all_channels(problem: BeamformingProblem) -> Tensor:
    """``[batch, cells, antennas, users]``: column ``u`` of ``[:, c]`` is ``h_{c,u}``, BS ``c`` to every
    user (its own and the other cells')."""
    return problem.channel.transpose(-1, -2)


def onto_budget(W: Tensor, budget: Tensor) -> Tensor:
    """``W`` scaled per BS so that ``‖W_c‖_F² = P_c`` exactly (a zero ``W_c`` stays zero)."""
    power = bs_power(W)
    scale = torch.where(power > 0, budget.to(power) / power.clamp_min(torch.finfo(power.dtype).tiny), 0)
    return W * scale.sqrt()[..., None, None].to(W.dtype)


def unit_columns(W: Tensor) -> Tensor:
    """Each beamformer over its norm (a zero one stays zero)."""
    norm = torch.linalg.vector_norm(W, dim=-2, keepdim=True)
    return W / norm.clamp_min(torch.finfo(norm.dtype).tiny).to(W.dtype)


def amplitudes(p: Tensor) -> Tensor:
    """``√p`` for powers ``p [..., K]``, each floored at 1e-12 of the sample's largest first: the same
    value to 1e-6 of the largest amplitude, and a finite gradient where a learned power is 0."""
    return p.clamp_min(1e-12 * p.amax(-1, keepdim=True).detach()).sqrt()


def mrt(problem: BeamformingProblem) -> Tensor:
    """Maximum-ratio transmission ``W_c = d_c H_c`` on each BS's budget."""
    return onto_budget(own_channels(problem), problem.budget)


def zf(problem: BeamformingProblem) -> Tensor:
    """Zero-forcing, eq. (24): ``W_c = d_c H_c (H_cᴴ H_c)⁻¹`` (needs ``N >= K``), on each BS's budget."""
    return zero_forcing(own_channels(problem), problem.budget)


def zero_forcing(H: Tensor, budget: Tensor) -> Tensor:
    """``W_c = d_c H_c (H_cᴴ H_c)⁻¹`` of any channels ``H [batch, cells, antennas, users per cell]`` (the
    problem's own in :func:`zf`, a learned or calibrated one elsewhere), on each BS's ``budget``."""
    return onto_budget(torch.linalg.solve(H.mH @ H, H, left=False), budget)


def rzf(problem: BeamformingProblem) -> Tensor:
    """Regularized zero-forcing ``W_c = d_c (H_c H_cᴴ + K σ²/P_c I)⁻¹ H_c`` on each BS's budget (the
    regularization of Peel et al. 2005; σ² the mean noise of the cell's users)."""
    H = own_channels(problem)
    b, c, n, k = H.shape
    noise = problem.noise.reshape(b, c, k).mean(-1).to(H.real.dtype)
    reg = (k * noise / problem.budget.to(noise))[..., None, None]
    eye = torch.eye(n, dtype=H.dtype, device=H.device)
    return onto_budget(torch.linalg.solve(H @ H.mH + reg * eye, H), problem.budget)


def optimal_structure(H: Tensor, p: Tensor, q: Tensor, noise: Tensor) -> Tensor:
    """Eq. (7) with ``q_j`` in the sum: ``w_k = √p_k (I + Σ_j q_j/σ² h_j h_jᴴ)⁻¹ h_k / ‖(…)⁻¹ h_k‖``.

    ``H [..., antennas, users]`` (columns ``h_j``), ``p`` and ``q [..., users]``, ``noise`` a tensor that
    broadcasts against ``[...]`` (one σ² per problem). Returns ``W [..., antennas, users]``.
    """
    eye = torch.eye(H.shape[-2], dtype=H.dtype, device=H.device)
    weight = (q / noise.to(q).unsqueeze(-1)).to(H.dtype)
    A = eye + (H * weight.unsqueeze(-2)) @ H.mH
    return unit_columns(torch.linalg.solve(A, H)) * amplitudes(p).unsqueeze(-2).to(H.dtype)


def reduced_structure(H: Tensor, p: Tensor, q: Tensor, noise: Tensor) -> Tensor:
    """Eq. (23): the structure of eq. (7) in the ``K``-dimensional space the channels span (``N >= K``,
    independent channels). With ``HᴴH = U Λ Uᴴ``, ``g_k = Λ^{-1/2} Uᴴ Hᴴ h_k`` (``G = Λ^{1/2} Uᴴ``), the
    ``K × K`` structure gives ``v_k``, and ``w_k = H U Λ^{-1/2} v_k``: the same beamformers as
    :func:`optimal_structure` (tested) with a ``K × K`` inverse instead of ``N × N``."""
    lam, U = torch.linalg.eigh(H.mH @ H)
    root = lam.clamp_min(0).sqrt().to(H.dtype)
    G = root.unsqueeze(-1) * U.mH  # [..., K, K], columns g_k
    V = optimal_structure(G, p, q, noise)
    return (H @ U) @ (V / root.unsqueeze(-1))


def dual_uplink_powers(problem: BeamformingProblem, W: Tensor) -> Tensor:
    """The virtual uplink powers ``q [batch, users]`` of one cell (``cells == 1``) for beamformers ``W``:
    with the directions ``u_k = w_k/‖w_k‖`` as uplink receivers, ``q`` gives every user the SINR it has
    in the downlink, ``q_k |h_kᴴu_k|² / (Σ_{j≠k} q_j |h_jᴴu_k|² + σ²) = γ_k``, a linear system. With one
    noise power for all users ``Σ q = Σ ‖w_k‖²`` (uplink-downlink duality); the structure of eq. (7) with
    these ``q`` returns the directions of a stationary point of the sum rate (tested on WMMSE's). Users
    without power get ``q = 0``."""
    if problem.num_cells != 1:
        raise ValueError(f"dual_uplink_powers takes one cell, got {problem.num_cells}")
    H, U = own_channels(problem)[:, 0], unit_columns(W[:, 0])  # [b, N, K]
    power = W[:, 0].abs().square().sum(-2)
    # a user without power (WMMSE switches some off) has no SINR to match: its q is 0
    active = power > 1e-12 * problem.budget[:, :1].to(power)
    gamma = torch.where(active, problem.sinr(W), 1.0)  # [b, K]
    cross = (U.mH @ H).abs().square()  # [b, k (receiver u_k), j (user h_j)] = |h_jᴴ u_k|²
    own = cross.diagonal(dim1=-2, dim2=-1)
    M = torch.diag_embed(own / gamma) - (cross - torch.diag_embed(own))
    pair = active.unsqueeze(-1) & active.unsqueeze(-2)
    eye = torch.eye(M.shape[-1], dtype=M.dtype, device=M.device)
    M = torch.where(pair, M, eye)
    rhs = torch.where(active, problem.noise.to(M), 0.0)
    return torch.linalg.solve(M, rhs.unsqueeze(-1)).squeeze(-1)


def slnr_directions(problem: BeamformingProblem, p: Tensor) -> Tensor:
    """Eq. (32): ``u_k ∝ (I + p_k/σ² Σ_j h_{c,j} h_{c,j}ᴴ)⁻¹ h_{c,k}`` for user ``k`` of cell ``c``, the
    sum over every user ``j`` of every cell (what BS ``c`` estimates from the uplink pilots), with the
    user's own power ``p [batch, cells, users per cell]``. Returns unit directions ``[b, c, N, K]``."""
    Hall, H = all_channels(problem), own_channels(problem)
    b, c, n, k = H.shape
    noise = problem.noise.reshape(b, c, k).to(H.real.dtype)
    cov = Hall @ Hall.mH  # [b, c, N, N]
    eye = torch.eye(n, dtype=H.dtype, device=H.device)
    A = eye + (p / noise).to(H.dtype)[..., None, None] * cov.unsqueeze(2)  # [b, c, k, N, N]
    directions = torch.linalg.solve(A, H.transpose(-1, -2).unsqueeze(-1)).squeeze(-1)  # [b, c, k, N]
    return unit_columns(directions.transpose(-1, -2))


def slnr_powers(problem: BeamformingProblem, U: Tensor, iters: int = 60) -> Tensor:
    """The power step of eq. (31): for unit directions ``U [b, c, N, K]``, the powers that maximize
    ``Σ_k log(p_k a_k / (p_k L_k + σ²))`` on each BS's budget, ``a_k = |h_{c,k}ᴴu_k|²`` and the leakage
    ``L_k = Σ_{j≠k} |h_{c,j}ᴴu_k|²`` over every other user of every cell. The objective is concave and
    separable: ``p_k(λ) = (√(σ⁴ + 4 L_k σ²/λ) − σ²) / (2 L_k)`` (``σ²/λ`` where ``L_k = 0``) from the
    KKT conditions, and the multiplier ``λ`` of each BS is found by bisection (in ``log λ``) so that
    ``Σ_k p_k = P_c``. Returns ``p [b, c, K]``."""
    Hall = all_channels(problem)
    b, c, n, k = U.shape
    noise = problem.noise.reshape(b, c, k).to(U.real.dtype)
    g = (U.mH @ Hall).abs().square()  # [b, c, k (beam), users]: |h_{c,j}ᴴ u_k|²
    idx = torch.arange(c, device=U.device)[:, None] * k + torch.arange(k, device=U.device)  # [c, k]
    a = g.gather(-1, idx.expand(b, c, k).unsqueeze(-1)).squeeze(-1)
    leak = g.sum(-1) - a
    budget = problem.budget.to(a)

    def powers(lam: Tensor) -> Tensor:  # lam [b, c]
        s = noise / lam.unsqueeze(-1)
        root = torch.sqrt(noise.square() + 4 * leak * s)
        return torch.where(leak > 0, (root - noise) / (2 * leak).clamp_min(torch.finfo(a.dtype).tiny), s)

    # Σ p(λ) falls from ∞ to 0; Σ p(λ) <= K σ²/λ brackets the root from above: λ_hi = K σ²_max / P
    hi = (k * noise.amax(-1) / budget).log()
    lo = hi - 80.0  # Σ p(e^lo) >= what one user alone takes, far above P for any realistic scale
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        over = powers(mid.exp()).sum(-1) > budget
        lo, hi = torch.where(over, mid, lo), torch.where(over, hi, mid)
    p = powers(hi.exp())
    return p * (budget / p.sum(-1)).unsqueeze(-1)


def slnr_alternating(problem: BeamformingProblem, iters: int = 20) -> Tensor:
    """Alternate :func:`slnr_directions` and :func:`slnr_powers` from equal powers (Sec. VI-A); each
    step does not decrease the SLNR objective of eq. (30). Returns ``W [b, c, N, K]``."""
    b, c, n, k = own_channels(problem).shape
    p = (problem.budget.to(problem.noise) / k).unsqueeze(-1).expand(b, c, k)
    for _ in range(iters):
        U = slnr_directions(problem, p)
        p = slnr_powers(problem, U)
    return U * p.sqrt().unsqueeze(-2).to(U.dtype)


# ---------------------------------------------------------------------------------------------
# The closed forms as baselines (eval.baselines) on the true downlink channel
# ---------------------------------------------------------------------------------------------
class _ClosedForm(Solver):
    """A closed-form beamformer of this module as a baseline: no labels, any objective."""

    families = (BEAMFORMING,)
    gives_labels = False
    objectives = None
    form: ClassVar[staticmethod]

    def solve(
        self, problem: BeamformingProblem, objective: Objective | None = None, generator=None
    ) -> Tensor:
        """Beamformers ``[batch, cells, antennas, users per cell]`` in the problem's precision."""
        return type(self).form(problem)


@SOLVERS.register("mrt_bf")
class MRTBeamforming(_ClosedForm):
    """Maximum-ratio transmission on each BS's budget (:func:`mrt`)."""

    display_name = "MRT"
    form = staticmethod(mrt)


@SOLVERS.register("zf_bf")
class ZFBeamforming(_ClosedForm):
    """Zero-forcing, eq. (24) (:func:`zf`); needs antennas >= users per cell."""

    display_name = "ZF"
    form = staticmethod(zf)

    def refuses(self, problem: BeamformingProblem) -> str | None:
        return zf_refusal(problem)


@SOLVERS.register("rzf_bf")
class RZFBeamforming(_ClosedForm):
    """Regularized zero-forcing (:func:`rzf`)."""

    display_name = "RZF"
    form = staticmethod(rzf)


@SOLVERS.register("slnr_bf")
class SLNRBeamforming(_ClosedForm):
    """SLNR beamforming, the alternation of eqs. (31)-(32) (:func:`slnr_alternating`): each BS from its
    own channels to every user, no inter-cell signalling."""

    display_name = "SLNR"
    form = staticmethod(slnr_alternating)


def zf_refusal(problem: BeamformingProblem) -> str | None:
    """Why ZF can't serve ``problem`` (fewer antennas than users per cell), or ``None``."""
    if problem.num_antennas < problem.users_per_cell:
        return (
            f"zero-forcing needs antennas >= users per cell, got {problem.num_antennas} antennas for "
            f"{problem.users_per_cell} users"
        )
    return None


# the uplink channel information a BS could zero-force from directly: the baseline and the tensor
UPLINK_ZF = (("zf_uplink", "h_ul"), ("zf_ls", "h_ul_ls"))


def uplink_zf(network, problem) -> dict[str, Tensor]:
    """ZF beamformers from the uplink, to be measured on the downlink ``problem``: the baselines that
    separate an uplink-CSI method's gap into its causes (Ma et al. 2022's implicit CSI). ``zf_uplink``:
    ZF of the true uplink channels used as the downlink (no uplink→downlink map, no pilot noise);
    ``zf_ls``: ZF of the LS estimate of the uplink pilots (``h_ul_ls``: no map, the pilots' noise). Each
    where the network ``[batch, cells, users, antennas]`` carries it; none without an uplink or where ZF
    cannot work (fewer antennas than users in a cell)."""
    if "h_ul" not in network.tensors or zf_refusal(problem) is not None:
        return {}
    out = {}
    for name, key in UPLINK_ZF:
        if key in network.tensors:
            channel = network[key].to(problem.channel)
            out[name] = zf(dataclasses.replace(problem, channel=channel))
    return out
