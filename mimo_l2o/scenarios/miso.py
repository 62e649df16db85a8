"""Single-cell MISO downlinks with uplink channel information: Zhang et al. (2022), Sections V-A, VII-A
and VII-B (``miso_tdd`` here; ``miso_fdd``, the multipath FDD pair, at the end of the module).

A BS with ``N_t`` antennas serves ``K`` single-antenna users. The uplink channels are i.i.d. Rayleigh,
``h_{U,k} ~ CN(0, I)``, and the downlink channels differ from them by the radio front-ends' mismatch
(eq. 38): ``h_{D,k} = c_k Φ h_{U,k}``, ``Φ`` a unitary ``N_t × N_t`` matrix (the BS side) and
``c_k ~ CN(0, 1)`` (user ``k``'s side). The paper's premise is a deterministic uplink→downlink map
(eq. 6: the hardware is what it is), so ``Φ`` and the ``c_k`` are drawn once per scenario seed (the same
for the training, validation and test sets); ``mismatch: per_sample`` redraws them for every sample, a
stress case with no fixed map to learn. Everything else (the channels, the pilots' noise) is redrawn for
every sample.

The frozen draws nest: ``c_k`` is user ``k``'s own hardware, so user ``k`` keeps its ``c_k`` whatever the
number of users (a sweep over ``K`` compares the same users plus more) and the number of antennas; ``Φ``
is the BS's, the same for any ``K`` and, as far as a unitary of another size allows, built from the same
Gaussian draws for any ``N_t`` (:func:`front_end`). A single seed still fixes one set of ``|c_k|²``,
so a curve over ``K`` should be read over several seeds (``-m seed=0,1,2``, :mod:`mimo_l2o.points`).

Powers are relative to the noise: ``p_max`` is the BS's total power over unit noise (the paper's
``P = 20 dB``: ``snr_db=20``).

With ``pilot_length: L`` the BS observes the uplink through pilots instead (Sec. IV-D): the users send
``X = √P_u D [K × L]``, ``D`` the first ``K`` rows and ``L`` columns of the ``max(K, L)``-point DFT
matrix, the BS receives ``Y = H_U X + N`` (``N`` CN(0, σ²)) and the network carries the least-squares version
``Ỹ = Y Xᴴ / (L P_u)`` (eq. 12; eq. 34 per BS in the multicell case) as ``h_ul_ls``, which the
``uplink_channel`` feature then gives the learners in place of the perfect ``h_ul``. For ``L >= K`` the
pilots are orthogonal and ``Ỹ = H_U + N Xᴴ / (L P_u)``; for ``L < K`` users' pilots overlap
(contamination). ``pilot_estimator: lmmse`` is the separate approach's estimator instead (eq. 17):
``Ĥ_U = H̄ + (Y − H̄ X)(Xᴴ Q X + N_t σ² I)⁻¹ Xᴴ Q`` with the mean ``H̄`` and ``Q = E[ΔHᴴ ΔH]`` of the
uplink channels, estimated once per scenario from :data:`CALIBRATION_SAMPLES` draws under a seed of
their own (the paper estimates them from its training data), carried as ``h_ul_lmmse`` and read by
``uplink_channel`` in place of ``h_ul_ls``. (Eq. 15 prints ``X Q Xᴴ``; with ``X`` of ``K × L`` the
product that fits, and that minimizes eq. 14, is ``Xᴴ Q X``.)

Sampling draws one fixed block of uniforms per sample (Box–Muller), so the first ``n`` of ``2n``
samples are the ``n`` samples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mimo_l2o.components import Network, Scenario, ScenarioConfig
from mimo_l2o.errors import require
from mimo_l2o.problems import BEAMFORMING
from mimo_l2o.registry import SCENARIOS
from mimo_l2o.scenarios.draws import exponential_from_uniform

MISMATCH = ("fixed", "per_sample")
PILOT_ESTIMATORS = ("ls", "lmmse")
CALIBRATION_SAMPLES = 4096  # draws of the uplink channels for the LMMSE estimator's mean and Q
DELAY_PHASE = ("shared", "per_band")


def complex_normal(u: Tensor) -> Tensor:
    """CN(0, 1) variates from uniforms ``u [..., 2 m]``: ``[..., m]`` complex128, Box–Muller in polar
    form (``|z|² = −ln(1 − u₁) ~ Exp(1)``, the phase ``2π u₂`` uniform)."""
    m = u.shape[-1] // 2
    radius = exponential_from_uniform(u[..., :m]).sqrt()
    angle = 2 * math.pi * u[..., m:]
    return torch.complex(radius * torch.cos(angle), radius * torch.sin(angle))


def haar_unitary(z: Tensor) -> Tensor:
    """A Haar-distributed unitary matrix from a complex Gaussian ``z [..., N, N]``: the Q of its QR
    decomposition with the phases of R's diagonal taken out (Mezzadri 2007)."""
    q, r = torch.linalg.qr(z)
    d = r.diagonal(dim1=-2, dim2=-1)
    return q * (d / d.abs()).unsqueeze(-2)


def dft_pilots(users: int, length: int, power: float) -> Tensor:
    """``X [users, length]`` complex128: ``√power`` times the first ``users`` rows and ``length`` columns
    of the ``max(users, length)``-point DFT matrix (unit-modulus entries; orthogonal rows when
    ``length >= users``)."""
    m = max(users, length)
    a = torch.arange(users, dtype=torch.float64).unsqueeze(-1) * torch.arange(length, dtype=torch.float64)
    angle = -2 * math.pi * torch.remainder(a, m) / m
    return math.sqrt(power) * torch.complex(torch.cos(angle), torch.sin(angle))


def received_pilots(h_ul: Tensor, pilots: Tensor, noise_power: float, u: Tensor) -> Tensor:
    """``Y = H_U X + N [n, C, N, L]`` (eqs. 11 and 33) at each BS ``c``, whose ``H_U`` has the columns
    ``h_ul[:, c, u]`` of ``h_ul [n, C, U, N]``, for the pilots ``X [U, L]`` and CN(0, ``noise_power``)
    noise from the uniforms ``u [n, C · 2 N L]``."""
    n, c, _, antennas = h_ul.shape
    length = pilots.shape[-1]
    noise = complex_normal(u.reshape(n, c, 2 * antennas * length)).reshape(n, c, antennas, length)
    return h_ul.transpose(-1, -2) @ pilots + math.sqrt(noise_power) * noise


def ls_estimate(h_ul: Tensor, pilots: Tensor, noise_power: float, u: Tensor) -> Tensor:
    """The least-squares uplink channels ``Ỹ = (H_U X + N) Xᴴ / (L P_u)`` (eqs. 12 and 34) in the rows of
    ``h_ul [n, C, U, N]`` (BS ``c``'s ``H_U`` has the columns ``h_ul[:, c, u]``), for the pilots
    ``X [U, L]`` of power ``P_u`` per symbol and CN(0, ``noise_power``) noise from the uniforms
    ``u [n, C · 2 N L]``."""
    return ls_from_received(received_pilots(h_ul, pilots, noise_power, u), pilots)


def ls_from_received(Y: Tensor, pilots: Tensor) -> Tensor:
    """``Ỹ = Y Xᴴ / (L P_u)`` of eq. (12) from ``Y [n, C, N, L]``, as rows ``[n, C, U, N]``."""
    length = pilots.shape[-1]
    power = float(pilots.abs().square().mean())
    return (Y @ pilots.mH / (length * power)).transpose(-1, -2)


def lmmse_from_received(Y: Tensor, pilots: Tensor, noise_power: float, mean: Tensor, gram: Tensor) -> Tensor:
    """Eq. (17): ``Ĥ_U = H̄ + (Y − H̄ X)(Xᴴ Q X + N σ² I)⁻¹ Xᴴ Q`` from ``Y [n, C, N, L]``, the mean
    ``H̄ [C, N, U]`` and ``Q = E[ΔHᴴ ΔH] [C, U, U]`` of each BS's ``H_U``, as rows ``[n, C, U, N]``: the
    estimator ``Y R + B`` of least mean squared error (eq. 14)."""
    antennas, length = Y.shape[-2], pilots.shape[-1]
    X = pilots.to(Y.dtype)
    eye = torch.eye(length, dtype=Y.dtype)
    R = torch.linalg.solve(X.mH @ gram @ X + antennas * noise_power * eye, X.mH @ gram)  # [C, L, U]
    return (mean + (Y - mean @ X) @ R).transpose(-1, -2)


def uplink_statistics(h_ul: Tensor) -> tuple[Tensor, Tensor]:
    """The mean ``H̄ [C, N, U]`` and ``Q = E[ΔHᴴ ΔH] [C, U, U]`` of each BS's ``H_U`` over the samples of
    ``h_ul [n, C, U, N]``."""
    H = h_ul.transpose(-1, -2)  # [n, C, N, U]
    mean = H.mean(0)
    delta = H - mean
    return mean, (delta.mH @ delta).mean(0)


def seed_of(*parts: object) -> int:
    """A 63-bit seed from the given parts (stable across processes and machines)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def nested_normals(stream: str, seed: int, count: int) -> Tensor:
    """``[count]`` CN(0, 1) variates of one seeded stream, each from its own pair of uniforms in turn,
    so that the first ``m`` of ``count`` are the ``m`` variates whatever ``count`` is."""
    g = torch.Generator().manual_seed(seed_of(stream, seed))
    u = torch.rand(count, 2, generator=g, dtype=torch.float64)
    return complex_normal(u.transpose(0, 1).reshape(2 * count))


def user_gains(stream: str, seed: int, cells: int, users: int) -> Tensor:
    """``c [cells · users]`` (cell-major), the users' front-end factors: user ``k`` of cell ``b`` draws
    the ``k``-th variate of the cell's own stream, the same for any number of users."""
    return torch.cat([nested_normals(f"{stream} cell {b}", seed, users) for b in range(cells)])


def front_end(stream: str, seed: int, antennas: int) -> Tensor:
    """``Φ [N_t, N_t]``, the BS's unitary front end: the Haar unitary (:func:`haar_unitary`) of the
    ``N_t × N_t`` top-left block of a Gaussian array whose row ``i`` is a nested stream of its own. A
    unitary can't keep its entries as ``N_t`` grows; its underlying Gaussian entries do."""
    rows = [nested_normals(f"{stream} row {i}", seed, antennas) for i in range(antennas)]
    return haar_unitary(torch.stack(rows))


@SCENARIOS.register("miso_tdd")
class MISOTDD(Scenario):
    """Single-cell TDD MISO downlink with front-end mismatch (Zhang et al. 2022, eq. 38).

    Network tensors (``n`` samples, complex128, CPU), one cell:

    - ``h_ul [n, 1, K, N_t]``: the uplink channels ``h_{U,k}`` (row ``k``), what the BS estimates;
    - ``h_dl [n, 1, K, N_t]``: the downlink channels ``h_{D,k} = c_k Φ h_{U,k}``, which the sum rate is
      measured on (the precoder ``downlink`` makes them the problem);
    - ``h_ul_ls [n, 1, K, N_t]``, with ``pilot_length`` set: the LS estimate of ``h_ul`` from the pilots.

    Params: ``noise_power``, ``p_max`` (linear, the BS's total power over the noise).
    """

    family = BEAMFORMING

    @dataclass
    class Config(ScenarioConfig):
        """Single-cell TDD MISO downlink (Zhang et al. 2022, Sec. VII-A).

        Parameters
        ----------
        name : str
            Registry key, ``miso_tdd``.
        num_antennas : int
            BS antennas ``N_t`` (the paper: ``N_t = K``, 2 to 8).
        num_users : int
            Single-antenna users ``K`` served by the BS.
        p_max : float
            The BS's total transmit power, relative to the noise (linear; 100 is the paper's 20 dB).
        noise_power : float
            Noise power at each user (linear, same unit as ``p_max``; the channels have unit-variance
            entries).
        mismatch : str
            ``fixed``: ``Φ`` and the ``c_k`` drawn once from the seed, shared by all samples and splits
            (the paper's deterministic map); ``per_sample``: redrawn for each sample (a stress case).
        pilot_length : int or None
            ``None``: the BS knows the uplink channels (perfect uplink CSI); ``L >= 1``: it observes them
            through ``L`` uplink DFT pilot symbols (module docstring).
        pilot_power : float or None
            Each user's pilot power per symbol (same unit as ``p_max``; ``None``: ``p_max``).
        pilot_estimator : str
            What the BS makes of the pilots: ``ls`` (default, eq. 12, the proposed method's input) or
            ``lmmse`` (eq. 17, the separate approach's channel estimate; module docstring).
        seed : int
            Seed of the data (and of the fixed mismatch).
        """

        power_unit = "linear"

        name: str = "miso_tdd"
        num_antennas: int = 4
        num_users: int = 4
        p_max: float = 100.0
        noise_power: float = 1.0
        mismatch: str = "fixed"
        pilot_length: int | None = None
        pilot_power: float | None = None
        pilot_estimator: str = "ls"
        seed: int = 0

        def __post_init__(self) -> None:
            super().__post_init__()
            require(
                self.num_antennas >= 1, "num_antennas", f"must be an integer >= 1, got {self.num_antennas}"
            )
            require(
                self.pilot_length is None or self.pilot_length >= 1,
                "pilot_length",
                f"must be an integer >= 1, or null for perfect uplink CSI, got {self.pilot_length}",
            )
            require(
                self.pilot_power is None or 0 < self.pilot_power < math.inf,
                "pilot_power",
                f"must be > 0 and finite, or null (p_max), got {self.pilot_power}",
            )
            require(
                self.pilot_estimator in PILOT_ESTIMATORS,
                "pilot_estimator",
                f"must be one of {', '.join(PILOT_ESTIMATORS)}, got {self.pilot_estimator!r}",
            )
            require(
                self.mismatch in MISMATCH,
                "mismatch",
                f"must be one of {', '.join(MISMATCH)}, got {self.mismatch!r}",
            )

    tensors = ("h_ul", "h_dl", "h_ul_ls", "h_ul_lmmse")

    def pilot_uniforms(self) -> int:
        """Uniforms per sample the pilots' noise takes (0 with perfect uplink CSI)."""
        length = self.config.pilot_length
        return (
            0
            if length is None
            else 2 * self.config.num_antennas * length * getattr(self.config, "num_cells", 1)
        )

    def observed(self, network: Network, u: Tensor) -> Network:
        """``network`` with the LS estimate ``h_ul_ls`` from the uniforms ``u`` when pilots are set, and
        with ``pilot_estimator: lmmse`` the LMMSE estimate ``h_ul_lmmse`` from the same pilots."""
        cfg = self.config
        if cfg.pilot_length is None:
            return network
        power = cfg.p_max if cfg.pilot_power is None else cfg.pilot_power
        h_ul = network["h_ul"]
        X = dft_pilots(h_ul.shape[-2], cfg.pilot_length, power)
        Y = received_pilots(h_ul, X, cfg.noise_power, u)
        network.tensors["h_ul_ls"] = ls_from_received(Y, X)
        if cfg.pilot_estimator == "lmmse":
            mean, gram = self.uplink_statistics()
            network.tensors["h_ul_lmmse"] = lmmse_from_received(Y, X, cfg.noise_power, mean, gram)
        return network

    def uplink_statistics(self) -> tuple[Tensor, Tensor]:
        """The mean and ``Q`` of each BS's uplink channels (:func:`uplink_statistics`) over
        :data:`CALIBRATION_SAMPLES` draws of this scenario under a seed of their own, computed once."""
        if getattr(self, "_statistics", None) is None:
            cfg = self.config
            perfect = type(self)(dataclasses.replace(cfg, pilot_length=None, pilot_estimator="ls"))
            g = torch.Generator().manual_seed(seed_of(f"{self.name} lmmse statistics", cfg.seed))
            self._statistics = uplink_statistics(perfect.sample(CALIBRATION_SAMPLES, g)["h_ul"])
        return self._statistics

    version = 2  # 2: the fixed mismatch nests over K and N_t (mismatch)
    cells = 1  # BSs whose users each draw their own c (multicell_miso: one per cell)

    def mismatch(self) -> tuple[Tensor, Tensor]:
        """The fixed mismatch of this seed: ``Φ [N_t, N_t]`` (unitary) and ``c [cells · K]`` (CN(0, 1)),
        drawn so that they nest (module docstring): user ``k`` of a cell has the same ``c_k`` whatever
        ``K`` and ``N_t`` are, and ``Φ`` is the Haar unitary of the top-left ``N_t × N_t`` block of one
        Gaussian array of the seed, whatever ``K`` is."""
        n, k, seed = self.config.num_antennas, self.config.num_users, self.config.seed
        phi = front_end(f"{self.name} front end", seed, n)
        return phi, user_gains(f"{self.name} user gains", seed, self.cells, k)

    def sample(self, num_samples: int, generator: torch.Generator) -> Network:
        """Draw ``num_samples`` networks from ``generator`` (a CPU generator): ``h_ul`` and ``h_dl``
        ``[num_samples, 1, K, N_t]`` complex128, params ``noise_power``, ``p_max``."""
        n, k = self.config.num_antennas, self.config.num_users
        per_sample = self.config.mismatch == "per_sample"
        mismatch = 2 * n * n + 2 * k if per_sample else 0
        u = torch.rand(
            num_samples,
            2 * k * n + mismatch + self.pilot_uniforms(),
            generator=generator,
            dtype=torch.float64,
        )
        h_ul = complex_normal(u[:, : 2 * k * n]).reshape(num_samples, k, n)
        network = self._network(h_ul, h_ul, u[:, 2 * k * n : 2 * k * n + mismatch])
        return self.observed(network, u[:, 2 * k * n + mismatch :])

    def _network(self, h_ul: Tensor, h_d: Tensor, rest: Tensor) -> Network:
        """The network of uplink channels ``h_ul`` and downlink channels before the mismatch ``h_d``
        (rows ``[n, K, N_t]``): ``h_dl[k] = c_k Φ h_d[k]``, with ``Φ`` and ``c`` drawn from the uniforms
        ``rest`` for ``mismatch: per_sample`` (``2 N_t² + 2 K`` a sample), else the seed's."""
        n, k = self.config.num_antennas, self.config.num_users
        if self.config.mismatch == "per_sample":
            phi = haar_unitary(complex_normal(rest[:, : 2 * n * n]).reshape(-1, n, n))
            c = complex_normal(rest[:, 2 * n * n : 2 * n * n + 2 * k])
        else:
            phi, c = self.mismatch()
        h_dl = c.unsqueeze(-1) * (h_d @ phi.transpose(-1, -2))
        return Network(
            tensors={"h_ul": h_ul.unsqueeze(1), "h_dl": h_dl.unsqueeze(1)},
            params={"noise_power": float(self.config.noise_power), "p_max": float(self.config.p_max)},
        )


def ula_response(angles: Tensor, n: int, ratio: float) -> Tensor:
    """``[..., n]``: a half-wavelength (at the downlink frequency) ULA's response to ``angles [...]``
    at a carrier ``ratio = f / f_D`` times the downlink's: ``e^{−jπ ratio m sin θ}``, ``m = 0 … n−1``
    (eq. 19 with ``d = λ_D / 2``)."""
    m = torch.arange(n, dtype=torch.float64)
    phase = -math.pi * ratio * torch.sin(angles).unsqueeze(-1) * m
    return torch.complex(torch.cos(phase), torch.sin(phase))


@SCENARIOS.register("miso_fdd")
class MISOFDD(MISOTDD):
    """Single-cell FDD massive MIMO downlink with a multipath uplink/downlink pair (Zhang et al. 2022,
    Sec. V-A and VII-B, eqs. 18-19 and 40).

    Each user's ``L_p`` paths share their angles ``θ_l`` (within ``±Δθ/2`` of a mean angle ``θ̄`` drawn per
    user), delays ``τ_l ~ U[0, 1e-4] s`` and phases ``φ_l ~ U[−π, π]`` between the bands (the paper prints
    ``[−π, −π]``, a typo), and real attenuations ``α_l > 0`` (Rayleigh, ``E α_l² = 1/L_p``):

        h_U = Σ_l α_l e^{−j2π f τ_l + jφ_l} a_U(θ_l),
        h_D = c Φ Σ_l α_l² e^{−j2π f τ_l + jφ_l} a_D(θ_l) · √(L_p / 2)      (eq. 40)

    with one ``f`` in both, as eq. (40) prints it (``delay_phase``), the ULA half a downlink wavelength
    apart (``a_U`` at ``f_U / f_D`` of the downlink's phase steps), ``Φ`` and ``c`` the fixed front-end
    mismatch of :class:`MISOTDD`. The factor ``√(L_p/2)`` (not the paper's) gives both links unit mean
    gain per antenna (``E α⁴ = 2/L_p²``), so ``p_max`` is the SNR over unit noise on both. With real
    attenuations and one ``f``, each path's downlink coefficient is ``|u_l| u_l`` of its uplink one
    ``u_l``: the map is deterministic, as the paper assumes (a complex ``α_l``, or ``per_band``, would make
    the downlink phases unpredictable).
    Network tensors and params as :class:`MISOTDD`.
    """

    version = 3  # 2: real path attenuations and one delay phase for both links; 3: nested mismatch

    @dataclass
    class Config(MISOTDD.Config):
        """Single-cell FDD massive MIMO downlink (Zhang et al. 2022, Sec. VII-B).

        Parameters
        ----------
        name : str
            Registry key, ``miso_fdd``.
        num_antennas : int
            BS antennas ``N_t`` (the paper: 64; laptop default 32, its Fig. 5).
        num_users : int
            Single-antenna users ``K``.
        p_max : float
            The BS's total power over the noise (linear; 10 is the paper's 10 dB).
        num_paths : int
            Propagation paths ``L_p`` per user.
        angle_spread_deg : float
            Width ``Δθ`` of each user's window of path angles, in degrees (the paper: at most 30).
        mean_angle_deg : float
            Users' mean angles ``θ̄`` are uniform in ``±mean_angle_deg`` around broadside.
        uplink_ghz, downlink_ghz : float
            Carrier frequencies (the paper: uplink 2.5 GHz, downlink 2.4 GHz).
        max_delay_s : float
            Path delays are uniform in ``[0, max_delay_s]`` seconds (the paper: 1e-4).
        delay_phase : str
            ``shared`` (default): both links carry the same delay phase ``e^{−j2π f τ_l}`` (at the
            downlink's ``f``), as eq. (40) prints it; ``per_band``: each link at its own carrier (eq. 4).
            With delays up to 1e-4 s and the bands 100 MHz apart, ``2π Δf τ`` spans 10⁴ turns, so per band
            the downlink's path phases are independent of the uplink's and no map can predict them.
        """

        name: str = "miso_fdd"
        num_antennas: int = 32
        num_users: int = 6
        p_max: float = 10.0
        num_paths: int = 5
        angle_spread_deg: float = 30.0
        mean_angle_deg: float = 60.0
        uplink_ghz: float = 2.5
        downlink_ghz: float = 2.4
        max_delay_s: float = 1e-4
        delay_phase: str = "shared"

        def __post_init__(self) -> None:
            super().__post_init__()
            require(self.num_paths >= 1, "num_paths", f"must be an integer >= 1, got {self.num_paths}")
            require(
                0 <= self.angle_spread_deg <= 30,
                "angle_spread_deg",
                f"must be in [0, 30] degrees (the paper's Δθ <= π/6), got {self.angle_spread_deg}",
            )
            require(
                0 <= self.mean_angle_deg <= 90,
                "mean_angle_deg",
                f"must be in [0, 90] degrees, got {self.mean_angle_deg}",
            )
            for key in ("uplink_ghz", "downlink_ghz"):
                value = getattr(self, key)
                require(0 < value < math.inf, key, f"must be > 0 and finite [GHz], got {value}")
            require(
                0 <= self.max_delay_s < math.inf,
                "max_delay_s",
                f"must be >= 0 and finite [s], got {self.max_delay_s}",
            )
            require(
                self.delay_phase in DELAY_PHASE,
                "delay_phase",
                f"must be one of {', '.join(DELAY_PHASE)}, got {self.delay_phase!r}",
            )

    def sample(self, num_samples: int, generator: torch.Generator) -> Network:
        """Draw ``num_samples`` networks (module docstring): ``h_ul``, ``h_dl [num_samples, 1, K, N_t]``."""
        cfg = self.config
        n, k, paths = cfg.num_antennas, cfg.num_users, cfg.num_paths
        per_sample = cfg.mismatch == "per_sample"
        # per user: the mean angle, then per path: angle, delay, phase, and the gain (two uniforms)
        links = k * (1 + 5 * paths)
        mismatch = 2 * n * n + 2 * k if per_sample else 0
        u = torch.rand(
            num_samples, links + mismatch + self.pilot_uniforms(), generator=generator, dtype=torch.float64
        )
        draws = u[:, :links].reshape(num_samples, k, 1 + 5 * paths)
        mean = math.radians(cfg.mean_angle_deg) * (2 * draws[..., 0] - 1)
        h_ul, h_d = multipath(draws[..., 1:], mean, n, cfg)
        network = self._network(h_ul, h_d, u[:, links : links + mismatch])
        return self.observed(network, u[:, links + mismatch :])


def multipath(draws: Tensor, mean: Tensor, n: int, cfg: MISOFDD.Config) -> tuple[Tensor, Tensor]:
    """The uplink channels and the downlink ones before the front-end mismatch, ``[..., n]`` each (eq.
    40, :class:`MISOFDD`), of links with the mean angles ``mean [...]`` (radians) from the uniforms
    ``draws [..., 5 L_p]`` (per path: angle, delay, phase, and two for the gain); ``cfg`` gives the
    paths, the spread, the carriers, the delays and ``delay_phase``."""
    paths = cfg.num_paths
    spread = math.radians(cfg.angle_spread_deg)
    angle = mean.unsqueeze(-1) + spread * (draws[..., :paths] - 0.5)  # [..., L]
    delay = cfg.max_delay_s * draws[..., paths : 2 * paths]
    phase = math.pi * (2 * draws[..., 2 * paths : 3 * paths] - 1)
    # the attenuation is a real amplitude (Rayleigh, E α² = 1/L_p): the phase is the path's φ and delay
    alpha = (complex_normal(draws[..., 3 * paths : 5 * paths]).abs() / math.sqrt(paths)).to(torch.complex128)
    f_u, f_d = cfg.uplink_ghz * 1e9, cfg.downlink_ghz * 1e9

    def rotation(f: float) -> Tensor:  # e^{−j2π f τ + jφ}, the delay's phase reduced mod 2π first
        turn = torch.remainder(f * delay, 1.0)
        angle_ = -2 * math.pi * turn + phase
        return torch.complex(torch.cos(angle_), torch.sin(angle_))

    a_u, a_d = ula_response(angle, n, f_u / f_d), ula_response(angle, n, 1.0)  # [..., L, n]
    uplink_phase = rotation(f_u if cfg.delay_phase == "per_band" else f_d)
    h_ul = ((alpha * uplink_phase).unsqueeze(-1) * a_u).sum(-2)
    h_d = ((alpha.square() * rotation(f_d)).unsqueeze(-1) * a_d).sum(-2) * math.sqrt(paths / 2)
    return h_ul, h_d
