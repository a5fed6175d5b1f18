"""grad_norm checks: unstable start, explosions (relative to rolling medians), vanishing gradients, and the
suggested clipping max-norm taken from the stable grad_norm distribution.
"""

from __future__ import annotations

import numpy as np

from onnxship.doctor._findings import Finding
from onnxship.doctor._readers import TrainLog
from onnxship.doctor._series import (
    data_advice,
    evidence,
    fmt,
    rolling_median_excluding_self,
    where_list,
    window_medians,
)

__all__ = [
    "clip_advice",
    "explosion_finding",
    "find_explosions",
    "suggest_max_norm",
    "unstable_prefix",
    "unstable_start_finding",
    "vanishing",
]

START_LOOKAHEAD = 5  # an unstable start is judged against the next this many grad_norm values


def suggest_max_norm(values: np.ndarray, percentile: float) -> float | None:
    if len(values) < 3:
        return None
    v = float(np.percentile(values, percentile))
    return float(f"{v:.2g}") if v > 0 else None


def clip_advice(log: TrainLog, max_norm: float | None, percentile: float) -> str:
    if max_norm is None:
        return "Clip gradients (torch.nn.utils.clip_grad_norm_) at a max-norm near the typical grad_norm."
    text = (
        f"Clip gradients at max-norm ≈ {max_norm:g} (the {percentile:g}th percentile of the stable grad_norm: "
        "outside the unstable start, the explosions and any diverging stretch): "
        f"torch.nn.utils.clip_grad_norm_(model.parameters(), {max_norm:g})"
    )
    if log.format.startswith("trainer"):
        text += (
            f", or TrainingArguments(max_grad_norm={max_norm:g}). The HF Trainer logs grad_norm before "
            "clipping and clips at 1.0 by default, so large values here mean the clipped update was still "
            "too big, or clipping is off (max_grad_norm=0 or None)"
        )
    return text + "."


def unstable_prefix(g: np.ndarray, factor: float) -> int:
    """Length of the leading run of grad_norm values ≥ factor × the median of the next few values."""
    count = 0
    for i in range(len(g)):
        nxt = g[i + 1 : i + 1 + START_LOOKAHEAD]
        if len(nxt) < 3 or g[i] < factor * np.median(nxt):
            break
        count += 1
    return count


def unstable_start_finding(
    log: TrainLog, g_rows: np.ndarray, g: np.ndarray, start: int, clip: str
) -> Finding:
    rows = g_rows[:start]
    settle = float(np.median(g[start : start + START_LOOKAHEAD]))
    ratio = float(g[:start].max() / settle)
    loss = log.values["loss"][rows]
    loss_text = (
        f"; the loss there was {fmt(np.nanmax(loss))} → {fmt(loss[-1])}" if np.isfinite(loss).any() else ""
    )
    return Finding(
        "unstable_start",
        "warning",
        f"unstable start: grad_norm up to {ratio:.3g}× the level it settles at",
        f"From {log.where(int(rows[0]))} to {log.where(int(rows[-1]))} grad_norm is {fmt(g[0])} → "
        f"{fmt(g[start - 1])}, up to {ratio:.3g}× the median of the {START_LOOKAHEAD} logs after it "
        f"({fmt(settle)}){loss_text}.",
        [
            clip,
            "Start with a lower learning rate: add or lengthen the warm-up (HF: warmup_ratio=0.05–0.1).",
            "A first loss orders of magnitude above the final one often means unnormalised inputs or regression "
            "targets, or a bad initialisation: standardise the data and check the output layer's scale.",
        ],
        steps=[float(log.step[r]) for r in rows],
        evidence=evidence(log, rows, "grad_norm", settles_at=settle),
    )


def _reference(lg: np.ndarray, k: int) -> np.ndarray:
    """The level a grad_norm is judged against (log10): the lower of the rolling median of its neighbours and the
    median of the k values before it. The first keeps a decaying run from hiding a jump; the second keeps a
    run-away (each value a few times the last) from raising its own reference."""
    centered = rolling_median_excluding_self(lg, k)
    trailing = np.full(len(lg), np.nan)
    for i in range(2, min(k, len(lg))):  # fewer than k values before i
        trailing[i] = np.median(lg[:i])
    trailing[k:] = window_medians(lg, k)[: len(lg) - k]
    return np.fmin(centered, trailing)


def find_explosions(g: np.ndarray, k: int, factor: float, start: int) -> list[int]:
    lg = np.log10(g)
    ref = _reference(lg, k)
    with np.errstate(invalid="ignore"):
        hit = (lg - ref) >= np.log10(factor)
    hit[:start] = False
    return [int(i) for i in np.flatnonzero(hit)]


def _episodes(indices: list[int]) -> list[list[int]]:
    groups: list[list[int]] = []
    for i in indices:
        if groups and i - groups[-1][-1] <= 1:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def explosion_finding(
    log: TrainLog, g_rows: np.ndarray, g: np.ndarray, k: int, idx: list[int], clip: str
) -> Finding:
    ref = 10 ** _reference(np.log10(g), k)
    episodes = _episodes(idx)
    peaks = [max(e, key=lambda i: g[i] / ref[i]) for e in episodes]
    parts = [
        (f"{log.where(int(g_rows[e[0]]))} – {log.where(int(g_rows[e[-1]]))}, peak " if len(e) > 1 else "")
        + f"{fmt(g[i])} at {log.where(int(g_rows[i]))} ({g[i] / ref[i]:.3g}× its rolling median "
        f"{fmt(ref[i])})"
        for e, i in list(zip(episodes, peaks, strict=True))[:5]
    ]
    rows = g_rows[idx]
    more = f" and {len(peaks) - 5} more" if len(peaks) > 5 else ""
    return Finding(
        "grad_explosion",
        "warning",
        f"grad_norm explodes in {len(episodes)} episode{'s' if len(episodes) > 1 else ''}",
        "grad_norm jumps: " + "; ".join(parts) + more + ".",
        [
            clip,
            "If explosions persist with clipping, lower the peak learning rate.",
            data_advice(log, int(g_rows[peaks[0]])),
        ],
        steps=[float(log.step[r]) for r in rows],
        evidence=evidence(
            log,
            rows,
            "grad_norm",
            rolling_median=[float(ref[i]) for i in idx],
            ratio=[float(g[i] / ref[i]) for i in idx],
        ),
    )


def vanishing(log: TrainLog, g_rows: np.ndarray, g: np.ndarray, start: int, factor: float) -> list[Finding]:
    zero = np.flatnonzero(log.logged["grad_norm"] & (log.values["grad_norm"] == 0.0))
    if len(zero):
        return [
            Finding(
                "vanishing_gradients",
                "warning",
                f"grad_norm is exactly 0 at {len(zero)} log entries",
                f"grad_norm == 0.0 first at {log.where(int(zero[0]))} ({where_list(log, zero)}): no parameter received a "
                "gradient.",
                [
                    "Check that the parameters are trainable (requires_grad, not frozen by mistake), that the loss is "
                    "connected to the model (no .detach()/.item()/torch.no_grad() on the path), and that not every "
                    "label in the batch is masked."
                ],
                steps=[float(log.step[r]) for r in zero[:50]],
                evidence=evidence(log, zero[:50], "grad_norm"),
            )
        ]
    post, post_rows = g[start:], g_rows[start:]
    if len(post) < 8:
        return []
    early = float(np.median(post[: len(post) // 2]))
    n_late = max(3, len(post) // 5)
    late = float(np.median(post[-n_late:]))
    if late > factor * early:
        return []
    rows = post_rows[-n_late:]
    loss = log.values["loss"][rows]
    low_loss = np.isfinite(loss).any() and np.nanmax(loss) < 1e-2 * np.nanmedian(log.values["loss"])
    return [
        Finding(
            "vanishing_gradients",
            "warning",
            f"grad_norm vanishes: the last logs are {early / late:.3g}× smaller",
            f"The median grad_norm of the last {n_late} logs ({where_list(log, rows, 3)}) is {fmt(late)}, against "
            f"{fmt(early)} over the first half of the run after the start.",
            (
                [
                    "The loss is near zero at the same time: the model fits the training data (almost) perfectly. Check "
                    "for memorisation or label leakage on held-out data; more steps will not teach it anything."
                ]
                if low_loss
                else []
            )
            + [
                "If the loss is still high: check for saturated activations (sigmoid/tanh), dead ReLUs, missing "
                "normalisation or residual connections, and whether the learning rate decayed to ~0 too early."
            ],
            steps=[float(log.step[r]) for r in rows],
            evidence=evidence(log, rows, "grad_norm", early_median=early),
        )
    ]
