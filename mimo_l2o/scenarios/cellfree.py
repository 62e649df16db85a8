"""Cell-free massive MIMO: Raghunath, Peng & Jorswieck (2023), Section II and V.

``L`` access points (APs) with ``N`` antennas each on a regular grid over a square area, ``h`` metres
above ``K`` single-antenna UEs dropped uniformly over the same area (no wrap-around). Large-scale gain
``β_lk`` [dB] = −30.5 − 36.7·log10(d_lk / 1 m) + X_lk with ``d`` the 3-D distance and ``X`` i.i.d.
log-normal shadowing (4 dB); Rayleigh fading ``h_lk ~ CN(0, β_lk I_N)``. With user-centric association
AP ``l`` serves UE ``k`` only if ``β_lk`` is at least a threshold, and every UE is served by its strongest
AP whatever the threshold; by default every AP serves every UE.

Sampling draws one fixed block of uniforms per sample (positions, shadowing, fading), so the first
``n`` samples of a larger batch drawn from the same seed are the same ``n`` samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mimo_l2o.components import Geometry, Network, Scenario, ScenarioConfig
from mimo_l2o.errors import require
from mimo_l2o.registry import SCENARIOS
from mimo_l2o.scenarios.draws import standard_normal_from_uniform

GRIDS = ("rows", "square")  # the AP layouts of ap_grid


def ap_grid(num_aps: int, side: float, layout: str = "rows") -> Tensor:
    """``[L, 2]`` AP positions on a grid, each AP at the centre of its grid cell, row by row.

    ``rows``: ``rows × cols`` with ``rows`` the largest divisor of ``L`` at most ``√L``, every row full
    (5 → 1 × 5, 9 → 3 × 3, 10 → 2 × 5, 15 → 3 × 5). ``square``: ``⌈√L⌉`` columns and as many rows as
    needed, the last one possibly short (5 → 3 + 2, 10 → 4 + 4 + 2, 15 → 4 + 4 + 4 + 3)."""
    if layout == "rows":
        rows = max(d for d in range(1, math.isqrt(num_aps) + 1) if num_aps % d == 0)
        cols = num_aps // rows
    else:
        cols = math.isqrt(num_aps - 1) + 1 if num_aps > 1 else 1
        rows = -(-num_aps // cols)
    idx = torch.arange(num_aps, dtype=torch.float64)
    x = (torch.remainder(idx, cols) + 0.5) * side / cols
    y = (torch.div(idx, cols, rounding_mode="floor") + 0.5) * side / rows
    return torch.stack([x, y], dim=1)


def path_loss_db(distance: Tensor) -> Tensor:
    """−30.5 − 36.7·log10(d / 1 m) dB (the paper's model; 2 GHz carrier)."""
    return -30.5 - 36.7 * torch.log10(distance)


@SCENARIOS.register("cellfree")
class CellFree(Scenario):
    """``L`` APs with ``N`` antennas serving ``K`` UEs over a square area, Rayleigh fading.

    Network tensors (``n`` samples, CPU):

    - ``channels [n, L, K, N]`` complex128: ``h_lk``, the channel from AP ``l`` to UE ``k`` (power-gain
      units: ``E|h|² = β`` per antenna), whether or not ``l`` serves ``k`` (its beams reach ``k`` anyway);
    - ``beta [n, L, K]`` float64: large-scale gains ``β_lk`` (linear);
    - ``serves [n, L, K]`` bool: the association (all true by default);
    - ``user_positions [n, K, 2]`` float64: UE positions in metres.

    Params: ``noise_power``, ``p_max`` (per AP, W), ``num_aps``.
    """

    @dataclass
    class Config(ScenarioConfig):
        """Cell-free massive MIMO (Raghunath et al. 2023, Section V).

        Parameters
        ----------
        name : str
            Registry key, ``cellfree``.
        num_users : int
            UEs K (the paper: 10 and 15).
        p_max : float
            Power budget of each AP in W (the paper gives none; 1 W).
        noise_power : float
            Receiver noise power in W (−86 dBm).
        seed : int
            Seed of the data.
        num_aps : int
            APs L (the paper: 5, 10, 15).
        num_antennas : int
            Antennas N per AP (the paper: 5).
        side : float
            Side of the square area in metres (the paper: 100).
        ap_height : float
            Height of the APs above the UEs in metres (the paper: 10).
        shadowing_db : float
            Standard deviation of the i.i.d. log-normal shadowing in dB (the paper: 4).
        association_db : float or None
            User-centric association: AP ``l`` serves UE ``k`` only if ``β_lk`` ≥ this gain in dB, or if
            it is UE ``k``'s strongest AP; ``None``: every AP serves every UE (the paper's default).
        ap_grid : str
            The AP grid (:func:`ap_grid`): ``rows`` (full rows; 5 APs in one row) or ``square`` (``⌈√L⌉``
            columns; 5 APs as 3 + 2). The paper says only "a grid"; with ``square`` SCA's energy
            efficiency grows from 5 to 10 APs as Table II's does, not from 10 x 10 to 15 x 15
            (``docs/results/raghunath2023_scaling/system_model.md``).
        """

        name: str = "cellfree"
        num_users: int = 10
        p_max: float = 1.0
        noise_power: float = 10 ** (-86 / 10) * 1e-3
        seed: int = 0
        num_aps: int = 5
        num_antennas: int = 5
        side: float = 100.0
        ap_height: float = 10.0
        shadowing_db: float = 4.0
        association_db: float | None = None
        ap_grid: str = "rows"

        def __post_init__(self) -> None:
            super().__post_init__()
            require(self.num_aps >= 1, "num_aps", f"must be an integer >= 1, got {self.num_aps}")
            require(
                self.num_antennas >= 1, "num_antennas", f"must be an integer >= 1, got {self.num_antennas}"
            )
            require(0 < self.side < math.inf, "side", f"must be > 0 and finite, got {self.side}")
            require(
                0 <= self.ap_height < math.inf, "ap_height", f"must be >= 0 and finite, got {self.ap_height}"
            )
            require(self.shadowing_db >= 0, "shadowing_db", f"must be >= 0, got {self.shadowing_db}")
            allowed = ", ".join(GRIDS)
            require(self.ap_grid in GRIDS, "ap_grid", f"must be one of {allowed}, got {self.ap_grid!r}")

    tensors = ("channels", "beta", "serves", "user_positions")

    def sample(self, num_samples: int, generator: torch.Generator) -> Network:
        """Draw ``num_samples`` networks from ``generator`` (CPU); see the class docstring."""
        cfg = self.config
        n, nl, k, m = num_samples, cfg.num_aps, cfg.num_users, cfg.num_antennas
        sizes = (2 * k, 2 * nl * k, 4 * nl * k * m)
        u = torch.rand(n, sum(sizes), generator=generator, dtype=torch.float64)
        u_pos, u_shadow, u_fading = u.split(sizes, dim=1)
        positions = u_pos.view(n, k, 2) * cfg.side
        flat = ap_grid(nl, cfg.side, cfg.ap_grid)[None, :, None, :] - positions[:, None, :, :]  # [n, L, K, 2]
        distance = torch.sqrt(flat.square().sum(-1) + cfg.ap_height**2)
        shadow = standard_normal_from_uniform(*u_shadow.view(n, nl, k, 2).unbind(-1)) * cfg.shadowing_db
        beta_db = path_loss_db(distance) + shadow
        beta = 10 ** (beta_db / 10)
        if cfg.association_db is None:
            serves = torch.ones(n, nl, k, dtype=torch.bool)
        else:  # the strong links, and every UE's strongest AP (no UE is left without service)
            strongest = beta_db.argmax(dim=1, keepdim=True)  # [n, 1, K]
            own = torch.zeros_like(beta_db, dtype=torch.bool).scatter_(1, strongest, True)
            serves = (beta_db >= cfg.association_db) | own
        g = standard_normal_from_uniform(*u_fading.view(n, nl, k, m, 2, 2).unbind(-1))  # [n, L, K, N, 2]
        fading = torch.complex(g[..., 0], g[..., 1]) / math.sqrt(2)  # CN(0, 1)
        channels = fading * beta.sqrt()[..., None]
        return Network(
            tensors={"channels": channels, "beta": beta, "serves": serves, "user_positions": positions},
            params={"noise_power": float(cfg.noise_power), "p_max": float(cfg.p_max), "num_aps": nl},
        )

    def geometry(self) -> Geometry:
        """The APs on their grid (:func:`ap_grid`), UEs in no cell (every AP may serve every UE), positions
        divided by the side of the area; no wrap-around."""
        cfg = self.config
        return Geometry(ap_grid(cfg.num_aps, cfg.side, cfg.ap_grid), None, scale=cfg.side, wrap=False)

    def user_positions(self, network: Network) -> Tensor:
        """``[n, K, 2]``: each UE's (x, y) in metres, in ``[0, side)²``."""
        return network["user_positions"]
