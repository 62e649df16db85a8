"""The one training loop every learner shares.

Device placement, optimizer, learning-rate schedule (reduce on plateau of the validation loss, or an
exponential decay), early stopping with the best weights restored, an epoch and a step limit, a
checkpoint of the best weights and per-epoch metrics (``train/loss``, ``val/loss``,
``val/objective_ratio``, ``train/lr``).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mimo_l2o.cache import atomic_save
from mimo_l2o.errors import RunFailure
from mimo_l2o.learner import Learner, OptimizerName, Schedule, TrainConfig

log = logging.getLogger(__name__)


CHECKPOINT_FORMAT = 1
LAST_CHECKPOINT = "last.pt"  # beside the best weights: the state to resume from, after every epoch
HEARTBEAT_S = 60.0  # without a progress bar, training is never silent for longer


class Diverged(RunFailure, FloatingPointError):
    """Training diverged: a loss that is no longer finite (the run ends FAILED with this reason)."""


def _diverged(what: str, optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> Diverged:
    """The one-line error of a loss that is no longer finite, naming the keys that set the step."""
    hint = f"try a smaller learner.train.lr (now {optimizer.param_groups[0]['lr']:.3g})"
    if cfg.weight_decay:
        hint += f" or learner.train.weight_decay (now {cfg.weight_decay:.3g})"
    return Diverged(f"training diverged: {what}; {hint}")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A ``last.pt`` written by :func:`fit`, loaded as data (``weights_only``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a training checkpoint of this version")
    return state


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == OptimizerName.rmsprop:
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.rmsprop_alpha, weight_decay=cfg.weight_decay)
    if cfg.optimizer == OptimizerName.sgd:
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _batches(data: dict[str, Tensor], batch_size: int, order: Tensor | None = None):
    n = next(iter(data.values())).shape[0]
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
        yield {k: v[index] for k, v in data.items()}


def fit(
    learner: Learner,
    model: nn.Module,
    train_data: dict[str, Tensor],
    val_data: dict[str, Tensor],
    device: torch.device,
    generator: torch.Generator,
    val_objective_ratio: Callable[[nn.Module], float] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint: Path | None = None,
    progress: bool = False,
    log_every: int = 1,
    resume: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model`` with ``learner.loss``; returns a summary (best epoch, losses, time).

    Parameters
    ----------
    train_data, val_data : dict[str, Tensor]
        ``inputs`` ``[n, ...]`` and, for supervised learners, ``labels`` ``[n, num_vars]``; moved
        to ``device`` once.
    generator : torch.Generator
        CPU generator for the shuffling order.
    val_objective_ratio : callable, optional
        ``model → mean objective of its final decisions ÷ the solver's`` on the validation set.
    on_epoch : callable, optional
        Receives ``(epoch, metrics)`` after each epoch (the runner logs them to MLflow).
    progress, log_every : bool, int
        A progress bar; without one, an INFO line every ``log_every`` epochs (0: none) and, within a
        long epoch, one every :data:`HEARTBEAT_S` seconds.
    checkpoint : Path, optional
        Written atomically: the best weights at ``checkpoint`` and, after every epoch, everything
        training needs to go on at ``last.pt`` beside it (:func:`training_state`).
    resume : dict, optional
        A ``last.pt`` (:func:`load_checkpoint`): training continues after its epoch with its weights,
        optimizer, schedule, shuffling generator, best epoch and the learner's own state, so the
        result is the one an uninterrupted run gets.
    """
    cfg: TrainConfig = learner.config.train
    model.to(device)
    train_data = {k: v.to(device) for k, v in train_data.items()}
    val_data = {k: v.to(device) for k, v in val_data.items()}
    n_train = next(iter(train_data.values())).shape[0]
    optimizer = make_optimizer(model.parameters(), cfg)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_steps = cfg.max_epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    max_epochs = math.ceil(total_steps / steps_per_epoch)
    exponential = Schedule(cfg.schedule) == Schedule.exponential
    if exponential:  # per step, reaching min_lr at the last step
        gamma = (cfg.min_lr / cfg.lr) ** (1 / max(total_steps - 1, 1))
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=cfg.min_lr
        )
    best_loss, best_epoch, best_state, stale = math.inf, -1, None, 0
    start = time.perf_counter()
    epoch, steps, first = -1, 0, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        generator.set_state(resume["generator"])
        learner.load_training_state(resume["learner"])
        best_loss, best_epoch, best_state, stale = (
            resume[k] for k in ("best_loss", "best_epoch", "best", "stale")
        )
        epoch, steps = resume["epoch"], resume["steps"]
        first = epoch + 1
        start -= resume["elapsed_s"]
        log.info("resuming training after epoch %d of %d", first, max_epochs)
    bar = tqdm(range(first, max_epochs), desc="train", unit="epoch", disable=not progress, leave=False)
    heard = time.perf_counter()
    for epoch in bar:
        model.train()
        order = torch.randperm(n_train, generator=generator).to(device)
        total, count = 0.0, 0
        for batch in _batches(train_data, cfg.batch_size, order):
            if steps == total_steps:  # the step limit, within the last epoch
                break
            steps += 1
            optimizer.zero_grad(set_to_none=True)
            loss = learner.loss(model, batch)
            value = loss.detach().item()
            if not math.isfinite(value):
                raise _diverged(f"the loss is {value} in epoch {epoch}", optimizer, cfg)
            loss.backward()
            optimizer.step()
            if exponential:
                scheduler.step()
            size = next(iter(batch.values())).shape[0]
            total += value * size
            count += size
            if log_every and not progress and time.perf_counter() - heard > HEARTBEAT_S:
                heard = time.perf_counter()
                log.info(
                    "epoch %d/%d: %d of %d samples, train/loss %.4g",
                    epoch + 1,
                    max_epochs,
                    count,
                    n_train,
                    total / count,
                )
        model.eval()
        with torch.no_grad():
            val_total, val_count = 0.0, 0
            for batch in _batches(val_data, max(cfg.batch_size, 4096)):
                size = next(iter(batch.values())).shape[0]
                val_total += learner.validation_loss(model, batch).item() * size
                val_count += size
        if not math.isfinite(val_total):
            raise _diverged(
                f"the validation loss is {val_total / val_count} after epoch {epoch}", optimizer, cfg
            )
        metrics = {
            "train/loss": total / count,
            "val/loss": val_total / val_count,
            "train/lr": optimizer.param_groups[0]["lr"],
        }
        if val_objective_ratio is not None:
            metrics["val/objective_ratio"] = val_objective_ratio(model)
        if not exponential:
            scheduler.step(metrics["val/loss"])
        learner.on_epoch_end(epoch, metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        bar.set_postfix({k.replace("/", "_"): f"{v:.4g}" for k, v in metrics.items() if k != "train/lr"})
        if log_every and not progress and ((epoch + 1) % log_every == 0 or epoch == 0):
            heard = time.perf_counter()
            shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            log.info("epoch %d/%d: %s (%.0f s)", epoch + 1, max_epochs, shown, heard - start)
        if metrics["val/loss"] < best_loss:
            best_loss, best_epoch, stale = metrics["val/loss"], epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            if checkpoint is not None:
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                atomic_save(best_state, checkpoint)
        else:
            stale += 1
        stop = bool(cfg.early_stopping_patience and stale >= cfg.early_stopping_patience)
        if checkpoint is not None and not stop:
            state = {
                "format": CHECKPOINT_FORMAT,
                "epoch": epoch,
                "steps": steps,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "learner": learner.training_state(),
                "best_loss": best_loss,
                "best_epoch": best_epoch,
                "best": best_state,
                "stale": stale,
                "elapsed_s": time.perf_counter() - start,
            }
            atomic_save(state, checkpoint.with_name(LAST_CHECKPOINT))
        if stop:
            log.info("early stopping after epoch %d (best %d)", epoch + 1, best_epoch + 1)
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {
        "best_epoch": best_epoch,
        "epochs": epoch + 1,
        "steps": steps,
        "best_val_loss": best_loss,
        "train_time_s": time.perf_counter() - start,
    }
