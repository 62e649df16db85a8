"""How well can the downlink channel of ``miso_fdd`` be had from the uplink one? Least-squares bounds.

Zhang et al. (2022) learn the FDD downlink channel from the uplink one with an FC network (the CSI-Net).
Eq. (40) makes the map deterministic: each path's downlink coefficient is ``|u_l| u_l`` of its uplink
one, at the same angle. This script fits, for each user, one linear map (complex least squares on the
training draws) from a set of features of the uplink column to the downlink column, and reports on
fresh test draws:

- ``nmse_db``: the NMSE of the fitted downlink channel, eq. (39), in dB;
- ``slnr_ratio``: the sum rate of SLNR alternating beamforming (eq. 32 with the power step of eq. 31)
  computed on the fitted channel and evaluated on the true one, over the same on the true channel.

The feature sets, each of which the ``model_driven`` learner's per-link network can read
(``plugins/zhang2022``):

- ``antenna``: the column ``x`` itself (what the paper's CSI-Net reads);
- ``beamspace``: also ``|b| b √N`` of its 4x oversampled DFT beamspace ``b`` (``csi_features:
  beamspace``);
- ``paths``: also ``√N Σ_l |u_l| u_l z_l^m`` of the plane waves the matrix pencil finds
  (``csi_features: paths``, order ``--paths``).

A linear map on the features is what ``csi_skip: true`` adds to the CSI-Net, so each row is what that
option can reach alone, with an ideal fit. ``--observe`` repeats the table for what the BS observes:
perfect uplink CSI, or the LS estimate from ``L`` uplink pilots (``scenario.pilot_length``) at a pilot
power. Eq. (40)'s map is defined path by path, and paths closer than the array resolves are told apart
only without noise, so the rows under pilots say how much of the path features' gain noise leaves.
Every draw is seeded (``--seed``); the output is the markdown table, stamped with the commit and the
machine, on stdout or into ``--out``.

    python benchmarks/fdd_channel_map.py --train 20000 --test 2000 --observe perfect 6 8 6@1000 \
        --out docs/results/fdd_channel_map.md
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and torch load their BLAS

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "plugins"))  # the plugin, when the project is not installed

from mimo_l2o_plugins.zhang2022.csi_features import (  # noqa: E402
    beamspace_grid,
    beamspace_products,
    path_features,
)

from mimo_l2o.precoders.downlink import Downlink  # noqa: E402
from mimo_l2o.scenarios.miso import MISOFDD  # noqa: E402
from mimo_l2o.solvers import beamformers as bf  # noqa: E402

FEATURES = ("antenna", "beamspace", "paths")


def features(h, kind: str, paths: int):
    """``[B, K, F]`` complex features of the uplink columns ``h [B, K, N]`` for the feature set ``kind``."""
    parts = [h]
    if kind in ("beamspace", "paths"):
        b = torch.view_as_complex(
            beamspace_products(h, beamspace_grid(h.shape[-1])).reshape(*h.shape[:-1], -1, 2).contiguous()
        )
        parts.append(b)
    if kind == "paths":
        parts.append(path_features(h, paths))
    return torch.cat(parts, -1)


def fit(x, y, ridge: float = 1e-9):
    """The least-squares map ``M`` of ``y ≈ x M`` for each user: ``x [B, K, F]``, ``y [B, K, N]``."""
    gram = torch.einsum("bki,bkj->kij", x.conj(), x) / x.shape[0]
    cross = torch.einsum("bki,bkj->kij", x.conj(), y) / x.shape[0]
    scale = gram.diagonal(dim1=-2, dim2=-1).real.mean(-1)[:, None, None]
    return torch.linalg.solve(gram + ridge * scale * torch.eye(x.shape[-1], dtype=x.dtype), cross)


def stamp() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"commit `{commit}`, {when}, {platform.processor() or platform.machine()}, torch {torch.__version__}"
    )


def observation(value: str) -> tuple[int | None, float | None]:
    """``perfect`` or ``L`` or ``L@power`` (``--observe``): the pilots and their power (``None``: p_max)."""
    if value == "perfect":
        return None, None
    length, _, power = value.partition("@")
    return int(length), (float(power) if power else None)


def describe(length: int | None, power: float | None) -> str:
    if length is None:
        return "perfect"
    return f"LS, L = {length}, pilot power " + ("p_max" if power is None else f"{power:g}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=20000, help="training draws for the fit")
    parser.add_argument("--test", type=int, default=2000, help="test draws")
    parser.add_argument("--paths", type=int, default=8, help="the matrix pencil's order (csi_paths)")
    parser.add_argument(
        "--observe",
        nargs="+",
        default=["perfect"],
        metavar="UPLINK",
        help="what the BS observes, one row group each: perfect (uplink CSI), L (the LS estimate from L "
        "DFT pilots at the pilot power p_max) or L@power (a linear pilot power per symbol)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the table here (default: stdout)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for setting in args.observe:
        length, power = observation(setting)
        scenario = MISOFDD(MISOFDD.Config(seed=args.seed, pilot_length=length, pilot_power=power))
        uplink = "h_ul" if length is None else "h_ul_ls"  # what the BS observes
        gen = torch.Generator().manual_seed(args.seed)
        train, test = scenario.sample(args.train, gen), scenario.sample(args.test, gen)
        problem = Downlink(None)(test).to(dtype=torch.float64)
        true = problem.channel[:, 0]  # [B, K, N]
        rate_true = problem.rates(bf.slnr_alternating(problem)).sum(-1).mean()
        y_train = Downlink(None)(train).channel[:, 0].to(torch.complex128)
        for kind in FEATURES:
            x_train = features(train[uplink][:, 0].to(torch.complex128), kind, args.paths)
            x_test = features(test[uplink][:, 0].to(torch.complex128), kind, args.paths)
            maps = fit(x_train, y_train)
            fitted = torch.einsum("bki,kij->bkj", x_test, maps)
            nmse = ((fitted - true).abs().square().sum((-2, -1)) / true.abs().square().sum((-2, -1))).mean()
            on_fit = dataclasses.replace(problem, channel=fitted.unsqueeze(1))
            rate = problem.rates(bf.slnr_alternating(on_fit)).sum(-1).mean()
            ratio = float(rate / rate_true)
            rows.append(
                (describe(length, power), kind, x_test.shape[-1], 10 * math.log10(float(nmse)), ratio)
            )
    cfg = scenario.config
    lines = [
        "# The `miso_fdd` downlink from the uplink by least squares (`benchmarks/fdd_channel_map.py`)",
        "",
        f"Generated by `python benchmarks/fdd_channel_map.py --train {args.train} --test {args.test} "
        f"--paths {args.paths} --seed {args.seed} --observe {' '.join(args.observe)}` at {stamp()}. "
        f"N_t = {cfg.num_antennas}, K = {cfg.num_users}, L_p = {cfg.num_paths} paths in "
        f"{cfg.angle_spread_deg:g}°, P = {cfg.p_max:g} over unit noise. The script's docstring says what is "
        "fitted and measured.",
        "",
        "| uplink CSI | features | complex features per user | NMSE [dB] "
        "| SLNR on the fit / on the true channel |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {o} | {k} | {w} | {n:.2f} | {r:.4f} |" for o, k, w, n, r in rows),
        "",
    ]
    text = "\n".join(lines)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
