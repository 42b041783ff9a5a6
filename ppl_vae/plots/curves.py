r"""Training curves and test log-likelihoods from a run's ``metrics.json``.

Left panel: the per-epoch history of ``training.history``, ``train_elbo`` and
``valid_elbo`` (nats per datapoint), and ``train_objective`` where it differs from the train
ELBO (IWAE and Rényi bounds, a KL weight :math:`\beta \ne 1`). Right panel: the test ELBO
and the importance-sampled test :math:`\log p(x)` with :math:`\pm 2` standard errors (the
``test`` entry), and the same for every later ``evaluations`` entry (``ppl-vae evaluate``),
labelled with split, K and epoch. The ``test`` entry belongs to the last epoch of the history.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ppl_vae.errors import ConfigError
from ppl_vae.plots._figure import figure
from ppl_vae.plots._layout import out_path
from ppl_vae.plots.result import PlotResult

__all__ = ["plot_training_curves", "read_metrics"]


def read_metrics(source: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """The metrics mapping: given as is, or read from a ``metrics.json`` file or a run
    directory holding one."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if path.is_dir():
        path = path / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the metrics {path}: {error}") from None
    if not isinstance(metrics, dict):
        raise ConfigError(f"{path} does not hold a metrics mapping")
    return metrics


def _column(history: list[dict[str, Any]], key: str) -> np.ndarray:
    values = [record.get(key) for record in history]
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _evaluations(metrics: dict[str, Any], last_epoch: int | None) -> list[dict[str, Any]]:
    """``label``, ``log_likelihood``, ``stderr``, ``elbo`` of the test entry and of every
    evaluation, in that order."""
    rows = []
    dataset = metrics.get("dataset")
    entries = []
    if isinstance(metrics.get("test"), Mapping):
        entries.append(("test", {"split": "test", "epoch": last_epoch, **metrics["test"]}))
    for i, entry in enumerate(metrics.get("evaluations") or []):
        if isinstance(entry, Mapping):
            entries.append((f"evaluation {i + 1}", entry))
    for name, entry in entries:
        other = entry.get("dataset") not in (None, dataset)
        where = f"{entry.get('dataset')} " if other else ""
        epoch = entry.get("epoch")
        label = f"{name}: {where}{entry.get('split', 'test')}, K={entry.get('num_samples')}" + (
            "" if epoch is None else f", epoch {epoch}"
        )
        stderr = entry.get("log_likelihood_stderr")
        rows.append(
            {
                "label": label,
                "log_likelihood": float(entry.get("log_likelihood", math.nan)),
                "stderr": math.nan if stderr is None else float(stderr),
                "elbo": float(entry.get("elbo", math.nan)),
            }
        )
    return rows


def _lower_limit(series: list[np.ndarray]) -> float | None:
    """A lower y-limit that leaves out the first twentieth of the epochs (at least the first one)
    when there are five or more, so early, very negative values do not flatten the rest."""
    length = len(series[0]) if series else 0
    if length < 5:
        return None
    skip = max(1, length // 20)
    tail = np.concatenate([s[skip:] for s in series])
    tail = tail[np.isfinite(tail)]
    if tail.size == 0:
        return None
    spread = float(tail.max() - tail.min()) or 1.0
    return float(tail.min()) - 0.1 * spread


def plot_training_curves(
    metrics: Mapping[str, Any] | str | Path,
    out_dir: str | Path,
    *,
    name: str = "training_curves",
) -> PlotResult:
    """``{name}.png``: the training history and the test evaluations of a run (see the
    module docs).

    :param metrics: the metrics mapping, a ``metrics.json`` path or a run directory.
    :raises ConfigError: when there is no per-epoch history to draw.
    :returns: a :class:`PlotResult` with tensors ``epoch``, ``train_elbo``, ``valid_elbo``
        (NaN where missing), ``train_objective`` (only when it differs from the train ELBO),
        and ``log_likelihood``, ``stderr``, ``elbo`` per evaluation (test entry first) with
        their ``evaluation_labels``.
    """
    data = read_metrics(metrics)
    history = [r for r in (data.get("training") or {}).get("history") or [] if isinstance(r, dict)]
    if not history:
        raise ConfigError(
            "the metrics hold no per-epoch training history (training.history is empty); "
            "train at least one epoch first"
        )
    epochs = _column(history, "epoch")
    curves = {"train_elbo": _column(history, "train_elbo")}
    valid = _column(history, "valid_elbo")
    if np.isfinite(valid).any():
        curves["valid_elbo"] = valid
    objective = _column(history, "train_objective")
    differs = np.abs(objective - curves["train_elbo"]) > 1e-6 * (1 + np.abs(objective))
    if np.isfinite(objective).any() and bool(np.nan_to_num(differs).any()):
        curves["train_objective"] = objective
    evaluations = _evaluations(data, int(epochs[-1]) if np.isfinite(epochs[-1]) else None)
    styles = {
        "train_elbo": ("C0", "-", "train ELBO"),
        "valid_elbo": ("C1", "-", "validation ELBO"),
        "train_objective": ("C2", "--", "train objective"),
    }
    path = out_path(out_dir, name)
    with figure(path, (11.0, 4.4)) as fig:
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": (3, 2)})
        for key, values in curves.items():
            color, style, label = styles[key]
            marker = "." if len(epochs) < 30 else ""
            left.plot(epochs, values, color=color, ls=style, label=label, marker=marker)
        bottom = _lower_limit(list(curves.values()))
        if bottom is not None:
            left.set_ylim(bottom=bottom)
        left.set_xlabel("epoch")
        left.set_ylabel("nats per datapoint")
        left.set_title(f"training ({data.get('dataset', 'data')})", fontsize=10)
        left.legend(fontsize="small")
        if evaluations:
            positions = np.arange(len(evaluations))[::-1]
            lls = np.array([e["log_likelihood"] for e in evaluations])
            ses = np.nan_to_num(np.array([e["stderr"] for e in evaluations]))
            right.errorbar(
                lls,
                positions,
                xerr=2 * ses,
                fmt="o",
                color="C3",
                capsize=4,
                label="IS log p(x) ± 2 se",
            )
            right.plot(
                [e["elbo"] for e in evaluations],
                positions,
                "s",
                color="C0",
                mfc="none",
                label="ELBO",
            )
            right.set_yticks(positions, [e["label"] for e in evaluations], fontsize=7)
            right.set_ylim(-0.6, len(evaluations) - 0.4)
            right.margins(x=0.15)
            right.set_xlabel("nats per datapoint")
            right.legend(fontsize="small")
            for e, position in zip(evaluations, positions, strict=True):
                right.annotate(
                    f"{e['log_likelihood']:.2f}",
                    (e["log_likelihood"], position),
                    textcoords="offset points",
                    xytext=(0, 6),
                    ha="center",
                    fontsize=7,
                )
        else:
            right.text(
                0.5, 0.5, "not evaluated yet", ha="center", va="center", transform=right.transAxes
            )
            right.set_axis_off()
        right.set_title("evaluations: log p(x) and ELBO", fontsize=10)
        fig.tight_layout()
    tensors: dict[str, Any] = {"epoch": torch.from_numpy(epochs)}
    tensors.update({key: torch.from_numpy(values) for key, values in curves.items()})
    if "valid_elbo" not in tensors:
        tensors["valid_elbo"] = torch.from_numpy(valid)
    for key in ("log_likelihood", "stderr", "elbo"):
        tensors[key] = torch.tensor([e[key] for e in evaluations], dtype=torch.float64)
    tensors["evaluation_labels"] = [e["label"] for e in evaluations]
    return PlotResult((path,), tensors)
