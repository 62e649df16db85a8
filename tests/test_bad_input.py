"""Bad input: one short line naming the key and what is allowed, exit code 2, before any
sampling (no cache written), and no MLflow run left RUNNING."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import TINY, run_app

CASES = {
    "unknown scenario": (["scenario=nosuch"], ["scenario=nosuch", "gaussian_ic", "imac"]),
    "unknown learner": (["learner=nosuch"], ["learner=nosuch", "dnn"]),
    "unknown solver": (["solver=nosuch"], ["solver=nosuch", "wmmse"]),
    "misspelled key": (["scenario.num_userz=4"], ["scenario.num_userz", "unknown key", "num_users"]),
    "misspelled learner key": (["learner.train.lrr=0.1"], ["learner.train.lrr", "unknown key", "lr"]),
    "wrong type": (["scenario.num_users=abc"], ["scenario.num_users", "abc", "Integer"]),
    "wrong type float": (["learner.train.lr=fast"], ["learner.train.lr", "fast", "Float"]),
    "zero users": (["scenario.num_users=0"], ["scenario.num_users", ">= 1", "0"]),
    "negative users": (["scenario.num_users=-3"], ["scenario.num_users", ">= 1", "-3"]),
    "zero power": (["scenario.p_max=0"], ["scenario.p_max", "> 0"]),
    "negative noise": (["scenario.noise_power=-1"], ["scenario.noise_power", "> 0"]),
    "imac cells do not divide users": (
        ["scenario=imac", "scenario.num_cells=3", "scenario.num_users=10"],
        ["scenario.num_users", "multiple", "3"],
    ),
    "batch larger than training set": (
        ["data.num_train=1000", "learner.train.batch_size=5000"],
        ["learner.train.batch_size", "5000", "data.num_train=1000"],
    ),
    "supervised learner, solver without labels": (["solver=random"], ["solver", "labels", "wmmse"]),
    "bad optimizer choice": (["learner.train.optimizer=adamw"], ["learner.train.optimizer", "adamw"]),
    "bad device": (["device=tpu"], ["device", "tpu"]),
    "unsupported device": (["device=meta"], ["device", "meta", "allowed"]),
    # cell-free massive MIMO (issue 4)
    "no APs": (["scenario=cellfree", "scenario.num_aps=0"], ["scenario.num_aps", ">= 1", "0"]),
    "no AP antennas": (["scenario=cellfree", "scenario.num_antennas=0"], ["scenario.num_antennas", ">= 1"]),
    "no cell-free users": (["scenario=cellfree", "scenario.num_users=0"], ["scenario.num_users", ">= 1"]),
    "AP budget zero": (["scenario=cellfree", "scenario.p_max=0"], ["scenario.p_max", "> 0"]),
    "area zero": (["scenario=cellfree", "scenario.side=0"], ["scenario.side", "> 0"]),
    "circuit power zero": (
        ["scenario=cellfree", "objective.circuit_power=0"],
        ["objective.circuit_power", "> 0"],
    ),
    "amplifier inefficiency negative": (
        ["scenario=cellfree", "objective.pa_inefficiency=-1"],
        ["objective.pa_inefficiency", "> 0"],
    ),
    "SCA for another objective": (
        ["scenario=cellfree", "objective=sum_rate", "solver=ee_sca"],
        ["solver", "solver=ee_sca", "objective=sum_rate", "energy_efficiency"],
    ),
    "position learner on a scenario without positions": (
        ["learner=position_mlp"],
        ["learner", "learner=position_mlp", "user_positions", "scenario=gaussian_ic", "no positions"],
    ),
    "position learner on a scenario without cells": (
        ["scenario=cellfree", "learner=position_lstm"],
        ["learner", "learner=position_lstm", "scenario=cellfree", "no cell"],
    ),
    "unknown GNN input features": (
        ["scenario=cellfree", "learner=gnn", "learner.features=matrix"],
        ["learner.features", "matrix", "gains", "structured"],
    ),
    "MRT without AP channels": (["precoder=mrt"], ["precoder", "precoder=mrt", "scenario=gaussian_ic"]),
    # cellular massive MIMO (issue 3)
    "no antennas": (["scenario=cellular", "scenario.num_antennas=0"], ["scenario.num_antennas", ">= 1"]),
    "more users than pilots fit": (
        ["scenario=cellular", "scenario.num_users=201"],
        ["scenario.num_users", "coherence=200", "201"],
    ),
    "cells not a perfect square": (
        ["scenario=cellular", "scenario.num_cells=3"],
        ["scenario.num_cells", "perfect square", "3"],
    ),
    "angular spread zero": (["scenario=cellular", "scenario.asd_deg=0"], ["scenario.asd_deg", "(0, 180]"]),
    "minimum distance outside the cell": (
        ["scenario=cellular", "scenario.min_distance=250"],
        ["scenario.min_distance", "cell_side/2 = 250", "250"],
    ),
    "no realizations": (
        ["scenario=cellular", "precoder.num_realizations=0"],
        ["precoder.num_realizations", ">= 1", "0"],
    ),
    "unknown correlation model": (
        ["scenario=cellular", "scenario.correlation=exact"],
        ["scenario.correlation", "exact", "closed_form", "integral"],
    ),
    "objective the solver cannot solve": (
        ["scenario=cellular", "objective=max_min", "solver=max_prod_newton"],
        ["solver", "solver=max_prod_newton", "objective=max_min", "max_prod"],
    ),
    "massive MIMO precoder without correlation": (
        ["precoder=mr"],
        ["precoder", "precoder=mr", "scenario=gaussian_ic"],
    ),
}


# Every numeric key of every group at a value it cannot take (NaN and ±inf included), the sizes a
# machine cannot hold, the paths and stores a run cannot use, and the combinations that cannot work.
MORE_CASES = {
    # the shared scenario keys, in every scenario
    "p_max inf": (["scenario.p_max=inf"], ["scenario.p_max", "finite", "inf"]),
    "p_max -inf": (["scenario.p_max=-inf"], ["scenario.p_max", "-inf"]),
    "noise nan": (["scenario.noise_power=nan"], ["scenario.noise_power", "nan"]),
    "noise inf": (["scenario.noise_power=inf"], ["scenario.noise_power", "inf"]),
    "noise zero": (["scenario.noise_power=0"], ["scenario.noise_power", "> 0"]),
    "seed a float": (["scenario.seed=1.5"], ["scenario.seed", "1.5"]),
    "imac p_max inf": (["scenario=imac", "scenario.p_max=inf"], ["scenario.p_max", "inf"]),
    "imac noise nan": (["scenario=imac", "scenario.noise_power=nan"], ["scenario.noise_power", "nan"]),
    "cellular p_max inf": (["scenario=cellular", "scenario.p_max=inf"], ["scenario.p_max", "inf"]),
    "cellular noise zero": (["scenario=cellular", "scenario.noise_power=0"], ["scenario.noise_power", "> 0"]),
    "cellular noise nan": (
        ["scenario=cellular", "scenario.noise_power=nan"],
        ["scenario.noise_power", "nan"],
    ),
    "cellfree p_max nan": (["scenario=cellfree", "scenario.p_max=nan"], ["scenario.p_max", "nan"]),
    "cellfree noise inf": (
        ["scenario=cellfree", "scenario.noise_power=inf"],
        ["scenario.noise_power", "inf"],
    ),
    "dBm on a scenario of linear powers": (["scenario.p_max_dbm=20"], ["scenario.p_max_dbm", "snr_db"]),
    "both dB forms": (
        ["scenario=cellfree", "scenario.p_max_dbm=20", "scenario.snr_db=3"],
        ["scenario.p_max_dbm", "at most one"],
    ),
    "dBm inf": (["scenario=cellular", "scenario.p_max_dbm=inf"], ["scenario.p_max_dbm", "inf"]),
    "SNR nan": (["scenario.snr_db=nan"], ["scenario.snr_db", "nan"]),
    # imac
    "imac no cells": (["scenario=imac", "scenario.num_cells=0"], ["scenario.num_cells", ">= 1"]),
    "imac radius zero": (["scenario=imac", "scenario.cell_radius=0"], ["scenario.cell_radius", "> 0"]),
    "imac radius nan": (["scenario=imac", "scenario.cell_radius=nan"], ["scenario.cell_radius", "nan"]),
    "imac radius inf": (["scenario=imac", "scenario.cell_radius=inf"], ["scenario.cell_radius", "inf"]),
    "imac min distance negative": (["scenario=imac", "scenario.min_distance=-1"], ["scenario.min_distance"]),
    "imac min distance beyond the cell": (
        ["scenario=imac", "scenario.min_distance=500"],
        ["scenario.min_distance", "115.47"],
    ),
    "imac shadowing negative": (
        ["scenario=imac", "scenario.shadowing_db=-1"],
        ["scenario.shadowing_db", ">= 0"],
    ),
    "imac shadowing nan": (["scenario=imac", "scenario.shadowing_db=nan"], ["scenario.shadowing_db", "nan"]),
    "imac shadowing inf": (["scenario=imac", "scenario.shadowing_db=inf"], ["scenario.shadowing_db", "inf"]),
    "imac path loss exponent zero": (
        ["scenario=imac", "scenario.path_loss_exponent=0"],
        ["scenario.path_loss_exponent", "> 0"],
    ),
    "imac path loss exponent nan": (
        ["scenario=imac", "scenario.path_loss_exponent=nan"],
        ["scenario.path_loss_exponent", "nan"],
    ),
    "imac reference distance zero": (
        ["scenario=imac", "scenario.reference_distance=0"],
        ["scenario.reference_distance", "> 0"],
    ),
    # cellular
    "cellular no cells": (["scenario=cellular", "scenario.num_cells=0"], ["scenario.num_cells", ">= 1"]),
    "cellular side zero": (["scenario=cellular", "scenario.cell_side=0"], ["scenario.cell_side", "> 0"]),
    "cellular side nan": (["scenario=cellular", "scenario.cell_side=nan"], ["scenario.cell_side", "nan"]),
    "cellular min distance negative": (
        ["scenario=cellular", "scenario.min_distance=-1"],
        ["scenario.min_distance", "-1"],
    ),
    "cellular min distance nan": (
        ["scenario=cellular", "scenario.min_distance=nan"],
        ["scenario.min_distance"],
    ),
    "cellular shadowing negative": (
        ["scenario=cellular", "scenario.shadowing_db=-1"],
        ["scenario.shadowing_db", ">= 0"],
    ),
    "cellular shadowing inf": (
        ["scenario=cellular", "scenario.shadowing_db=inf"],
        ["scenario.shadowing_db", "inf"],
    ),
    "cellular angular spread nan": (
        ["scenario=cellular", "scenario.asd_deg=nan"],
        ["scenario.asd_deg", "nan"],
    ),
    "cellular angular spread inf": (
        ["scenario=cellular", "scenario.asd_deg=inf"],
        ["scenario.asd_deg", "inf"],
    ),
    "cellular angular spread beyond 180": (
        ["scenario=cellular", "scenario.asd_deg=400"],
        ["scenario.asd_deg", "180", "400"],
    ),
    "cellular coherence zero": (
        ["scenario=cellular", "scenario.coherence=0"],
        ["scenario.coherence", ">= 1"],
    ),
    "cellular pilot power zero": (
        ["scenario=cellular", "scenario.pilot_power=0"],
        ["scenario.pilot_power", "> 0"],
    ),
    "cellular pilot power nan": (["scenario=cellular", "scenario.pilot_power=nan"], ["scenario.pilot_power"]),
    "cellular antennas negative": (
        ["scenario=cellular", "scenario.num_antennas=-1"],
        ["scenario.num_antennas"],
    ),
    # cell-free
    "cellfree APs negative": (["scenario=cellfree", "scenario.num_aps=-1"], ["scenario.num_aps", ">= 1"]),
    "cellfree side nan": (["scenario=cellfree", "scenario.side=nan"], ["scenario.side", "nan"]),
    "cellfree side inf": (["scenario=cellfree", "scenario.side=inf"], ["scenario.side", "inf"]),
    "cellfree AP height negative": (["scenario=cellfree", "scenario.ap_height=-1"], ["scenario.ap_height"]),
    "cellfree AP height nan": (
        ["scenario=cellfree", "scenario.ap_height=nan"],
        ["scenario.ap_height", "nan"],
    ),
    "cellfree shadowing nan": (["scenario=cellfree", "scenario.shadowing_db=nan"], ["scenario.shadowing_db"]),
    "cellfree shadowing negative": (
        ["scenario=cellfree", "scenario.shadowing_db=-2"],
        ["scenario.shadowing_db"],
    ),
    "cellfree association nan": (
        ["scenario=cellfree", "scenario.association_db=nan"],
        ["scenario.association_db", "nan"],
    ),
    "cellfree association inf": (
        ["scenario=cellfree", "scenario.association_db=inf"],
        ["scenario.association_db", "inf"],
    ),
    # sizes the machine cannot hold
    "one network larger than the memory": (
        ["scenario.num_users=100000"],
        ["scenario", "scenario=gaussian_ic", "do not fit"],
    ),
    "a training set larger than the memory": (
        ["data.num_train=1000000000000"],
        ["data.num_train", "GB", "max_memory_gb"],
    ),
    "a cell-free network larger than the memory": (
        ["scenario=cellfree", "scenario.num_aps=2000", "scenario.num_users=2000", "data.num_train=100000"],
        ["scenario", "scenario=cellfree", "do not fit"],
    ),
    "a memory limit below the estimate": (["max_memory_gb=0.0001"], ["data.chunk_size", "GB", "set"]),
    "a negative memory limit": (["max_memory_gb=-1"], ["max_memory_gb", "> 0"]),
    "a memory limit of nan": (["max_memory_gb=nan"], ["max_memory_gb", "nan"]),
    # precoders
    "MR realizations negative": (
        ["scenario=cellular", "precoder=mr", "precoder.num_realizations=-1"],
        ["precoder.num_realizations", ">= 1"],
    ),
    "M-MMSE on the IMAC": (
        ["scenario=imac", "precoder=mmmse"],
        ["precoder", "precoder=mmmse", "scenario=imac"],
    ),
    "RZF on the interference channel": (
        ["precoder=rzf"],
        ["precoder", "precoder=rzf", "scenario=gaussian_ic"],
    ),
    # objectives
    "bandwidth zero": (["scenario=cellfree", "objective.bandwidth=0"], ["objective.bandwidth", "> 0"]),
    "bandwidth nan": (["scenario=cellfree", "objective.bandwidth=nan"], ["objective.bandwidth", "nan"]),
    "amplifier inefficiency nan": (
        ["scenario=cellfree", "objective.pa_inefficiency=nan"],
        ["objective.pa_inefficiency", "nan"],
    ),
    "circuit power inf": (
        ["scenario=cellfree", "objective.circuit_power=inf"],
        ["objective.circuit_power", "inf"],
    ),
    "max-min on the cell-free network": (
        ["scenario=cellfree", "objective=max_min"],
        ["data.label_solver", "ee_pga", "objective=max_min"],
    ),
    "a max-min solver on the cell-free network": (
        [
            "scenario=cellfree",
            "objective=max_min",
            "solver=max_min_pf",
            "learner=gnn",
            "data.label_solver=null",
        ],
        ["solver", "max_min_pf", "scenario=cellfree", "one power variable per user"],
    ),
    "WMMSE on the cell-free network": (
        ["scenario=cellfree", "objective=sum_rate", "solver=wmmse", "data.label_solver=null"],
        ["solver", "wmmse", "scenario=cellfree"],
    ),
    # solvers
    "WMMSE tolerance zero": (["solver.tol=0"], ["solver.tol", "> 0"]),
    "WMMSE tolerance nan": (["solver.tol=nan"], ["solver.tol", "nan"]),
    "WMMSE tolerance negative": (["solver.tol=-1"], ["solver.tol", "-1"]),
    "WMMSE no iterations": (["solver.max_iter=0"], ["solver.max_iter", ">= 1"]),
    "ascent without starts": (
        ["scenario=cellfree", "solver=ee_pga", "solver.starts=0"],
        ["solver.starts", ">= 1"],
    ),
    "ascent without steps": (
        ["scenario=cellfree", "solver=ee_pga", "solver.steps=0"],
        ["solver.steps", ">= 1"],
    ),
    "ascent step nan": (["scenario=cellfree", "solver=ee_pga", "solver.lr=nan"], ["solver.lr", "nan"]),
    "ascent final step above the first": (
        ["scenario=cellfree", "solver=ee_pga", "solver.final_lr=1"],
        ["solver.final_lr", "(0, lr]"],
    ),
    "SCA tolerance nan": (["scenario=cellfree", "solver.tol=nan"], ["solver.tol", "nan"]),
    "SCA no iterations": (["scenario=cellfree", "solver.max_iter=0"], ["solver.max_iter", ">= 1"]),
    "SCA workers negative": (["scenario=cellfree", "solver.workers=-1"], ["solver.workers", ">= 0"]),
    "max-min cvxpy tolerance zero": (
        ["scenario=cellular", "objective=max_min", "solver=max_min_cvxpy", "solver.tol=0"],
        ["solver.tol", "(0, 1)"],
    ),
    "Newton tolerance nan": (
        ["scenario=cellular", "objective=max_prod", "solver=max_prod_newton", "solver.tol=nan"],
        ["solver.tol", "nan"],
    ),
    "Newton no iterations": (
        ["scenario=cellular", "objective=max_prod", "solver=max_prod_newton", "solver.max_iter=0"],
        ["solver.max_iter", ">= 1"],
    ),
    "max-min solver for max-product": (
        ["scenario=cellular", "solver=max_min_pf"],
        ["solver", "solver=max_min_pf", "objective=max_prod"],
    ),
    "ascent for max-product": (
        ["scenario=cellular", "objective=max_prod", "solver=ee_pga"],
        ["solver", "solver=ee_pga", "max_prod"],
    ),
    # training (the shared schema; the same in every learner)
    "learning rate zero": (["learner.train.lr=0"], ["learner.train.lr", "> 0"]),
    "learning rate nan": (["learner.train.lr=nan"], ["learner.train.lr", "nan"]),
    "learning rate inf": (["learner.train.lr=inf"], ["learner.train.lr", "inf"]),
    "learning rate negative": (["learner.train.lr=-1"], ["learner.train.lr", "-1"]),
    "RMSprop alpha above one": (
        ["learner.train.rmsprop_alpha=1.5"],
        ["learner.train.rmsprop_alpha", "(0, 1)"],
    ),
    "RMSprop alpha nan": (["learner.train.rmsprop_alpha=nan"], ["learner.train.rmsprop_alpha", "nan"]),
    "weight decay negative": (["learner.train.weight_decay=-1"], ["learner.train.weight_decay", ">= 0"]),
    "weight decay nan": (["learner.train.weight_decay=nan"], ["learner.train.weight_decay", "nan"]),
    "weight decay inf": (["learner.train.weight_decay=inf"], ["learner.train.weight_decay", "inf"]),
    "batch size zero": (["learner.train.batch_size=0"], ["learner.train.batch_size", ">= 1"]),
    "no epochs": (["learner.train.max_epochs=0"], ["learner.train.max_epochs", ">= 1"]),
    "steps negative": (["learner.train.max_steps=-1"], ["learner.train.max_steps", ">= 0"]),
    "early stopping patience negative": (
        ["learner.train.early_stopping_patience=-1"],
        ["learner.train.early_stopping_patience", ">= 0"],
    ),
    "plateau patience negative": (["learner.train.lr_patience=-1"], ["learner.train.lr_patience", ">= 0"]),
    "plateau factor zero": (["learner.train.lr_factor=0"], ["learner.train.lr_factor", "(0, 1)"]),
    "plateau factor nan": (["learner.train.lr_factor=nan"], ["learner.train.lr_factor", "nan"]),
    "minimum rate negative": (["learner.train.min_lr=-1"], ["learner.train.min_lr", "-1"]),
    "minimum rate nan": (["learner.train.min_lr=nan"], ["learner.train.min_lr", "nan"]),
    "minimum rate above the rate": (["learner.train.min_lr=1"], ["learner.train.min_lr", "lr = 0.001"]),
    # dnn (Sun 2018)
    "DNN bias nan": (["learner.bias_init=nan"], ["learner.bias_init", "nan"]),
    "DNN bias inf": (["learner.bias_init=inf"], ["learner.bias_init", "inf"]),
    "DNN without hidden layers": (["learner.hidden=[]"], ["learner.hidden", "at least one"]),
    "DNN layer of width zero": (["learner.hidden=[0]"], ["learner.hidden", ">= 1"]),
    "DNN unknown output unit": (["learner.output_unit=watts"], ["learner.output_unit", "watts"]),
    # gnn (Raghunath 2023)
    "GNN no rounds": (["learner=gnn", "learner.rounds=0"], ["learner.rounds", ">= 1"]),
    "GNN hidden zero": (["learner=gnn", "learner.hidden=0"], ["learner.hidden", ">= 1"]),
    "GNN shift spread negative": (["learner=gnn", "learner.norm_shift_std=-1"], ["learner.norm_shift_std"]),
    "GNN shift mean nan": (
        ["learner=gnn", "learner.norm_shift_mean=nan"],
        ["learner.norm_shift_mean", "nan"],
    ),
    "GNN kappa step nan": (["learner=gnn", "learner.kappa_step=nan"], ["learner.kappa_step", "nan"]),
    "GNN kappa window zero": (["learner=gnn", "learner.kappa_window=0"], ["learner.kappa_window", ">= 1"]),
    "GNN no samples": (["learner=gnn", "learner.samples=0"], ["learner.samples", ">= 1"]),
    "GNN power scale zero": (["learner=gnn", "learner.power_scale=0"], ["learner.power_scale", "> 0"]),
    "GNN temperature zero": (["learner=gnn", "learner.temperature=0"], ["learner.temperature", "> 0"]),
    "GNN temperature nan": (["learner=gnn", "learner.temperature=nan"], ["learner.temperature", "nan"]),
    "GNN refinement steps negative": (["learner=gnn", "learner.refine_steps=-1"], ["learner.refine_steps"]),
    "GNN refinement step zero": (["learner=gnn", "learner.refine_lr=0"], ["learner.refine_lr", "> 0"]),
    "GNN refinement final step above the first": (
        ["learner=gnn", "learner.refine_final_lr=1"],
        ["learner.refine_final_lr"],
    ),
    # position learners (Sanguinetti 2018)
    "position floor negative": (
        ["scenario=cellular", "learner=position_mlp", "learner.relative_floor=-1"],
        ["learner.relative_floor"],
    ),
    "position floor nan": (
        ["scenario=cellular", "learner=position_mlp", "learner.relative_floor=nan"],
        ["learner.relative_floor", "nan"],
    ),
    "position pretraining negative": (
        ["scenario=cellular", "learner=position_mlp", "learner.pretrain_epochs=-1"],
        ["learner.pretrain_epochs", ">= 0"],
    ),
    "position temperature zero": (
        ["scenario=cellular", "learner=position_mlp", "learner.temperature=0"],
        ["learner.temperature", "> 0"],
    ),
    "LSTM no pilot shifts": (
        ["scenario=cellular", "learner=position_lstm", "learner.pilot_shifts=0"],
        ["learner.pilot_shifts"],
    ),
    "LSTM temperature nan": (
        ["scenario=cellular", "learner=position_lstm", "learner.temperature=nan"],
        ["learner.temperature", "nan"],
    ),
    # data
    "no validation set": (["data.num_val=0"], ["data.num_val", ">= 1"]),
    "no test set": (["data.num_test=0"], ["data.num_test", ">= 1"]),
    "chunk size zero": (["data.chunk_size=0"], ["data.chunk_size", ">= 1"]),
    "unknown labeller": (["data.label_solver=nosuch"], ["data.label_solver", "nosuch", "wmmse"]),
    "a labeller without labels": (["data.label_solver=random"], ["data.label_solver", "random", "labels"]),
    "a labeller for another objective": (
        ["data.label_solver=max_prod_newton"],
        ["data.label_solver", "max_prod_newton", "sum_rate"],
    ),
    # evaluation
    "unknown baseline": (["eval.baselines=[nosuch]"], ["eval.baselines", "nosuch"]),
    "a baseline for another objective": (
        ["eval.baselines=[max_prod_newton]"],
        ["eval.baselines", "max_prod_newton", "sum_rate"],
    ),
    "a baseline for another objective on cellular": (
        ["scenario=cellular", "eval.baselines=[ee_pga]"],
        ["eval.baselines", "ee_pga", "objective=max_prod"],
    ),
    "no timing samples": (["eval.timing_samples=0"], ["eval.timing_samples", ">= 1"]),
    "no timing repeats": (["eval.timing_repeats=0"], ["eval.timing_repeats", ">= 1"]),
    "timing budget nan": (["eval.timing_budget_s=nan"], ["eval.timing_budget_s", "nan"]),
    "timing budget zero": (["eval.timing_budget_s=0"], ["eval.timing_budget_s", "> 0"]),
    # the run's own keys
    "training seed a float": (["seed=1.5"], ["seed", "1.5"]),
    "training seed nan": (["seed=nan"], ["seed", "nan"]),
    "threads negative": (["num_threads=-1"], ["num_threads", ">= 0"]),
    "threads beyond the machine": (["num_threads=100000"], ["num_threads", "cores"]),
    "progress neither true nor false": (["progress=maybe"], ["progress", "maybe"]),
    "log_model neither true nor false": (["tracking.log_model=maybe"], ["tracking.log_model", "maybe"]),
    "empty experiment name": (["tracking.experiment=''"], ["tracking.experiment", "non-empty"]),
    "unknown preset": (["experiment=nosuch"], ["experiment=nosuch", "debug", "raghunath2023_10ap10ue"]),
    # the beamforming family (issue 14)
    "beamforming learner on a power-control scenario": (
        ["learner=model_driven"],
        ["learner", "learner=model_driven works on beamforming problems", "makes power_control"],
    ),
    "power-control learner on a beamforming scenario": (
        ["scenario=miso_tdd", "learner=gnn"],
        ["learner", "learner=gnn works on power_control problems", "makes beamforming"],
    ),
    "wmmse_bf on a power-control problem": (
        ["solver=wmmse_bf"],
        ["solver", "solver=wmmse_bf works on beamforming problems", "makes power_control"],
    ),
    "scalar wmmse on a beamforming problem": (
        ["scenario=miso_tdd", "solver=wmmse"],
        ["solver", "solver=wmmse works on power_control problems", "makes beamforming"],
    ),
    "zf start with fewer antennas than users": (
        ["scenario=miso_tdd", "scenario.num_antennas=2", "solver.init=zf"],
        ["solver", "init=zf", "antennas >= users per cell", "init=mrt"],
    ),
    "zf baseline with fewer antennas than users": (
        ["scenario=miso_tdd", "scenario.num_antennas=2", "learner=model_driven"],
        ["eval.baselines", "zero-forcing needs antennas >= users per cell"],
    ),
    "no BS antennas": (["scenario=miso_tdd", "scenario.num_antennas=0"], ["scenario.num_antennas", ">= 1"]),
    "BS power zero": (["scenario=miso_tdd", "scenario.p_max=0"], ["scenario.p_max", "> 0"]),
    "unknown mismatch": (
        ["scenario=miso_tdd", "scenario.mismatch=random"],
        ["scenario.mismatch", "fixed", "per_sample"],
    ),
    "FDD angle window too wide": (
        ["scenario=miso_fdd", "scenario.angle_spread_deg=45"],
        ["scenario.angle_spread_deg", "[0, 30]"],
    ),
    "FDD no paths": (["scenario=miso_fdd", "scenario.num_paths=0"], ["scenario.num_paths", ">= 1"]),
    "FDD carrier zero": (["scenario=miso_fdd", "scenario.uplink_ghz=0"], ["scenario.uplink_ghz", "> 0"]),
    "dBm on a linear beamforming scenario": (
        ["scenario=miso_tdd", "scenario.p_max_dbm=10"],
        ["scenario.p_max_dbm", "snr_db"],
    ),
    "no pilots": (["scenario=miso_fdd", "scenario.pilot_length=0"], ["scenario.pilot_length", ">= 1"]),
    "pilot power negative": (
        ["scenario=miso_tdd", "scenario.pilot_length=4", "scenario.pilot_power=-1"],
        ["scenario.pilot_power", "> 0"],
    ),
    "multicell not a full ring": (
        ["scenario=multicell_miso", "scenario.num_cells=4"],
        ["scenario.num_cells", "1, 7, 19"],
    ),
    "multicell bandwidth zero": (
        ["scenario=multicell_miso", "scenario.bandwidth_mhz=0"],
        ["scenario.bandwidth_mhz", "> 0"],
    ),
    "multicell users inside the minimum distance": (
        ["scenario=multicell_miso", "scenario.min_distance_m=500"],
        ["scenario.min_distance_m", "inner radius"],
    ),
    "multicell no pilots": (
        ["scenario=multicell_miso", "scenario.pilot_length=0"],
        ["scenario.pilot_length", ">= 1"],
    ),
    "model-driven loss weights all zero": (
        [
            "scenario=miso_tdd",
            "learner=model_driven",
            "learner.alpha_h=0",
            "learner.alpha_p=0",
            "learner.alpha_r=0",
        ],
        ["learner.alpha_r", "at least one loss weight"],
    ),
    "model-driven channel_bf in several cells": (
        ["scenario=multicell_miso", "learner=model_driven", "learner.variant=channel_bf"],
        ["learner.variant", "channel_bf is the joint single-cell network's", "7 cells"],
    ),
    "model-driven channel_bf on the per-link network in one cell": (
        ["scenario=miso_fdd", "learner=model_driven", "learner.variant=channel_bf", "learner.csi_skip=true"],
        ["learner.variant", "not the per-link network's (csi_skip=true)", "use hybrid"],
    ),
    "model-driven ZF loss with fewer antennas than users": (
        [
            "scenario=miso_tdd",
            "scenario.num_antennas=2",
            "learner=model_driven",
            "learner.recovery=zf",
            "eval.baselines=[mrt_bf]",
        ],
        ["learner.recovery", "recovery=zf needs antennas >= users per cell", "num_antennas=2"],
    ),
    "model-driven CNN Power-Net in several cells": (
        ["scenario=multicell_miso", "learner=model_driven", "learner.power_net=cnn"],
        ["learner.power_net", "single-cell Power-Net", "7 cells", "use fc"],
    ),
    "model-driven CNN Power-Net with the path features": (
        ["scenario=miso_fdd", "learner=model_driven", "learner.power_net=cnn", "learner.csi_features=paths"],
        ["learner.power_net", "not the per-link network (csi_features=paths)", "use fc"],
    ),
    "model-driven matrix pencil of too high an order": (
        [
            "scenario=miso_fdd",
            "learner=model_driven",
            "learner.csi_features=paths",
            "learner.csi_paths=17",
        ],
        ["learner.csi_paths", "at most num_antennas // 2 = 16", "got 17"],
    ),
    "model-driven matrix pencil of order zero": (
        ["scenario=miso_fdd", "learner=model_driven", "learner.csi_paths=0"],
        ["learner.csi_paths", ">= 1"],
    ),
    "model-driven CNN kernel even": (
        ["scenario=miso_tdd", "learner=model_driven", "learner.power_kernel=4"],
        ["learner.power_kernel", "odd integer"],
    ),
    # Ma 2022 (issue 15)
    "neural calibration in several cells": (
        ["scenario=multicell_miso", "learner=neural_calibration"],
        ["learner", "neural_calibration beamforms in one cell", "7 cells"],
    ),
    "neural calibration with fewer antennas than users": (
        [
            "scenario=massive_fdd",
            "scenario.num_antennas=4",
            "learner=neural_calibration",
            "eval.baselines=[mrt_bf]",
        ],
        ["learner", "zero-forces", "antennas >= users", "num_antennas=4 < scenario.num_users=8"],
    ),
    "implicit neural calibration without pilots": (
        ["scenario=massive_fdd", "learner=neural_calibration", "learner.csi=implicit"],
        ["learner.csi", "implicit needs uplink pilots", "pilot_length is null"],
    ),
    "unknown neural calibration csi": (
        ["scenario=massive_fdd", "learner=neural_calibration", "learner.csi=partial"],
        ["learner.csi", "perfect, implicit, block", "partial"],
    ),
    "deepmimo without a folder": (
        ["scenario=deepmimo", "learner=neural_calibration"],
        ["scenario.path", "DeepMIMO v4 scenario folder with a params.json"],
    ),
    "room with six paths": (
        ["scenario=massive_fdd", "scenario.num_paths=6"],
        ["scenario.num_paths", "1 to 5"],
    ),
    "user closer than the room allows": (
        ["scenario=massive_fdd", "scenario.min_distance_m=20"],
        ["scenario.min_distance_m", "must be in (0, 9)"],
    ),
    "shift of a key the scenario lacks": (
        ["eval.shifts={scenario.nosuch: [1]}"],
        ["eval.shifts.scenario.nosuch", "not a key of scenario=gaussian_ic"],
    ),
    "shift to a value the scenario refuses": (
        ["eval.shifts={scenario.num_users: [4, 0]}"],
        ["eval.shifts.scenario.num_users", "0:", ">= 1"],
    ),
    "shifts not a mapping": (["eval.shifts=[1,2]"], ["eval.shifts", "mapping"]),
    # the command line itself
    "unclosed list": (["scenario.num_users=[1,2"], ["bad override"]),
    "empty key": (["=3"], ["bad override"]),
    "a very long value": (["scenario.num_users=" + "a" * 400], ["scenario.num_users", "…"]),
    "a very long device": (["device=cuda" + "a" * 400], ["device", "…"]),
}

CASES = {**CASES, **MORE_CASES}


def _runs(db):
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        try:
            return con.execute("select run_uuid, status from runs").fetchall()
        except sqlite3.OperationalError:
            return []


# what a refused run may leave: the tracking store it checked (never a run in it)
STORE_FILES = {"mlflow.db", "mlflow.db.lock"}


def _check_line(code, stderr, needles, workdir, keep=()):
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert len(lines[0]) <= 260
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    left = {p.name for p in workdir.iterdir()} - STORE_FILES - set(keep)
    assert not left, f"a refused run left {sorted(left)}"
    assert _runs(workdir / "mlflow.db") == []


def _check(proc, needles, workdir, keep=()):
    _check_line(proc.returncode, proc.stderr, needles, workdir, keep)


def run_main(args: list[str], workdir, capsys) -> tuple[int, str]:
    """``python -m mimo_l2o <args>`` in this process (half a second instead of five): the exit code
    and stderr."""
    import mlflow

    from mimo_l2o.__main__ import main

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])  # another test may have set one
    capsys.readouterr()
    argv = sys.argv
    sys.argv = ["mimo_l2o", *args]
    try:
        main()
        code = 0
    except SystemExit as exit:
        code = exit.code
    finally:
        sys.argv = argv
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_one_line_exit_2(name, workdir, capsys):
    overrides, needles = CASES[name]
    keys = {o.split("=")[0] for o in overrides}
    args = [o for o in TINY if o.split("=")[0] not in keys] + overrides
    code, err = run_main(args, workdir, capsys)
    _check_line(code, err, needles, workdir)


def test_the_table_is_large_enough():
    assert len(CASES) >= 100


def test_bad_input_in_a_new_process(workdir):
    """The promise as a user meets it: a fresh interpreter, one line, exit 2, nothing written."""
    proc = run_app(*TINY, "scenario=cellular", "scenario.asd_deg=inf", cwd=workdir)
    _check(proc, ["scenario.asd_deg", "inf"], workdir)


def test_a_cache_dir_that_is_a_file(workdir, capsys):
    (workdir / "afile").write_text("")
    code, err = run_main([*TINY, f"cache_dir={workdir / 'afile' / 'cache'}"], workdir, capsys)
    (workdir / "afile").unlink()
    _check_line(code, err, ["cache_dir", "is a file"], workdir)


@pytest.mark.parametrize(
    "uri, needles",
    [
        ("http://127.0.0.1:9", ["MLFLOW_TRACKING_URI", "http://127.0.0.1:9", "does not answer"]),
        ("bogus://x", ["MLFLOW_TRACKING_URI", "bogus", "unknown scheme"]),
        ("sqlite:////nonexistent/dir/mlflow.db", ["MLFLOW_TRACKING_URI", "/nonexistent/dir"]),
    ],
)
def test_a_tracking_store_that_cannot_be_used(uri, needles, workdir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    start = time.monotonic()
    proc = run_app(*TINY, cwd=workdir)
    assert time.monotonic() - start < 30  # the server check gives up after 5 s, the rest is start-up
    _check(proc, needles, workdir)


def test_a_deleted_experiment(workdir, capsys):
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    client.delete_experiment(client.create_experiment("gone"))
    code, err = run_main([*TINY, "tracking.experiment=gone"], workdir, capsys)
    _check_line(code, err, ["tracking.experiment", "gone", "deleted", "restore"], workdir)


def test_bad_value_anywhere_in_a_sweep_fails_before_any_job(workdir):
    proc = run_app("-m", "scenario.num_users=4,0", *TINY, cwd=workdir)
    _check(proc, ["scenario.num_users", ">= 1"], workdir)
    assert _runs(workdir / "mlflow.db") == []


def test_impossible_combination_anywhere_in_a_sweep_fails_before_any_job(workdir):
    tiny = [o for o in TINY if not o.startswith(("data.num_train", "learner.train.batch_size"))]
    proc = run_app("-m", "data.num_train=1000", "learner.train.batch_size=200,2000", *tiny, cwd=workdir)
    _check(proc, ["learner.train.batch_size", "2000"], workdir)
    assert _runs(workdir / "mlflow.db") == []


def test_unknown_top_level_key_is_refused(workdir):
    proc = run_app("+seeed=3", *TINY, cwd=workdir)
    _check(proc, ["seeed", "unknown key", "seed"], workdir)


def test_the_reference_solver_as_a_baseline_is_refused(workdir):
    proc = run_app("eval.baselines=[max_power,wmmse]", *TINY, cwd=workdir)
    _check(proc, ["eval.baselines", "wmmse"], workdir)


def _fake_plugin(root):
    """A third-party learner package, discovered through its entry point like any plugin."""
    pkg = root / "fake_l2o_plugin"
    (pkg / "conf" / "learner").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """
            from mimo_l2o.learner import Learner

            class PositionLearner(Learner):
                requires_labels = True
                inputs = ("user_positions_nowhere",)
            """
        )
    )
    (pkg / "conf" / "learner" / "needs_positions.yaml").write_text(
        "defaults:\n  - /schema/learner/needs_positions@_here_\n  - _self_\n\nname: needs_positions\n"
    )
    dist = root / "fake_l2o_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-l2o-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[mimo_l2o.learners]\nneeds_positions = fake_l2o_plugin:PositionLearner\n"
    )


def test_learner_input_the_scenario_cannot_provide(workdir):
    _fake_plugin(workdir / "site")
    proc = run_app("learner=needs_positions", *TINY, cwd=workdir, env={"PYTHONPATH": str(workdir / "site")})
    _check(
        proc, ["learner=needs_positions", "user_positions_nowhere", "scenario=gaussian_ic"], workdir, ["site"]
    )


def test_a_store_of_another_mlflow_version(workdir, capsys):
    """A store whose schema another mlflow wrote (a colleague's newer one upgraded it) is named as
    such with what to do, instead of the bare exception type."""
    import mlflow

    # another process creates the store at this version's schema (this one would keep its engine)
    make = "import mlflow; mlflow.MlflowClient().search_experiments()"
    subprocess.run([sys.executable, "-c", make], check=True, capture_output=True)
    with sqlite3.connect(workdir / "mlflow.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'f00dfeed0001'")
    code, err = run_main(TINY, workdir, capsys)
    needles = ["MLFLOW_TRACKING_URI", "another mlflow", mlflow.__version__, "mlflow db upgrade"]
    _check_line(code, err, needles, workdir)


def test_a_store_that_is_not_a_database(workdir, capsys):
    (workdir / "mlflow.db").write_text("not sqlite\n" * 100)
    code, err = run_main(TINY, workdir, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "MLFLOW_TRACKING_URI" in lines[0] and "cannot be read" in lines[0] and "not a database" in lines[0]
