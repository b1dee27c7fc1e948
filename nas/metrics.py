"""The names of what a trial measures, defined once: studies choose objectives among them, the evaluation and
the trainer report them, the results database and every table read them.

Accuracies and recalls are fractions in [0, 1] (tables print them in percent) and are maximised; the training
loss is minimised. What the analytic cost model gives before training is `nas.cost.COST_METRICS`.
"""

from __future__ import annotations

ZEROSHOT_KS = (1, 5)
RETRIEVAL_KS = (1, 5, 10)
ZEROSHOT = tuple(f"zeroshot_top{k}" for k in ZEROSHOT_KS)
RETRIEVAL = tuple(f"{direction}_R@{k}" for direction in ("image_to_text", "text_to_image") for k in RETRIEVAL_KS)
#: Measured by `nas.evaluate` at every rung: fractions of an eval set.
EVALUATED = ZEROSHOT + RETRIEVAL
#: What training measures that a study may optimise.
TRAINED = ("loss", *EVALUATED)
#: Training-free scores of a candidate at initialisation (`nas.proxies`), higher predicting better: a study may
#: use them, like the cost metrics, as objectives known before any training.
ZERO_COST = ("naswot", "synflow")
#: A candidate's zero-shot top-1 with the weights it inherits from a trained supernet (`nas.supernet`), no
#: training of its own: a one-shot proxy, higher predicting better.
SUPERNET = "supernet_top1"
#: That score with its eval-set interval and the number of eval images, as a study with a `proxy` stores it per trial.
SUPERNET_SCORE = (SUPERNET, f"{SUPERNET}_low", f"{SUPERNET}_high", f"{SUPERNET}_n")


def direction(metric: str) -> str:
    """Accuracies and recalls are maximised; the loss is minimised."""
    return "min" if metric == "loss" else "max"


def to_error(values, metric: str):
    """What a scaling law describes: 1 - accuracy (it falls towards a floor), or the loss itself."""
    return values if direction(metric) == "min" else 1.0 - values
