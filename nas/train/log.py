"""A run's metrics: `metrics.jsonl` and `config.json` in its directory, and the same scalars by samples seen to
TensorBoard and W&B (`ReportTo`, open_clip_train's `--report-to`)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import ConfigError
from nas.jsonable import jsonable
from nas.metrics import EVALUATED

if TYPE_CHECKING:
    from nas.train.runtime import Runtime

METRICS = "metrics.jsonl"
#: Where a run's TensorBoard events go by default: `OUT/tensorboard` for a single run, `RUN/tensorboard/<trial>`
#: for the trials of a search (one `tensorboard --logdir RUN/tensorboard` compares them).
TENSORBOARD = "tensorboard"
#: What `--report-to` takes (open_clip_train's names); metrics.jsonl is always written.
REPORT_TO = ("tensorboard", "wandb")
#: Rung metrics that are positions or bookkeeping, not curves.
_NOT_SCALARS = frozenset({"budget", "samples_seen", "step", "checkpoint", "hits"})


@dataclass(frozen=True)
class ReportTo:
    """Where a run's scalars go besides its `metrics.jsonl`, all against samples seen (open_clip_train's
    `--report-to`): TensorBoard event files in the directory `tensorboard`, and a W&B run in the project
    `wandb_project`, named `name` and grouped by `group` (a study's trials share its name as their group).

    `ReportTo.parse("tensorboard,wandb", ...)` reads the option; W&B must be installed (it is no dependency)."""

    tensorboard: str | None = None
    wandb_project: str | None = None
    name: str | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        if self.wandb_project is not None and importlib.util.find_spec("wandb") is None:
            raise ConfigError("wandb is not installed: `pip install wandb`, or leave wandb out of --report-to",
                              field="report_to")

    @classmethod
    def parse(cls, names: str | Iterable[str], tensorboard: str | os.PathLike | None,
              wandb_project: str = "vitamin-nas", name: str | None = None, group: str | None = None) -> ReportTo:
        """`names` as `--report-to` gives them ("tensorboard,wandb"; "" or "none" for neither)."""
        chosen = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
        chosen = [n for n in chosen if n != "none"]
        unknown = sorted(set(chosen) - set(REPORT_TO))
        if unknown:
            raise ConfigError(f"unknown {', '.join(unknown)}; allowed: {', '.join(REPORT_TO)} (comma-separated) or "
                              "none", field="report_to")
        return cls(tensorboard=str(tensorboard) if "tensorboard" in chosen and tensorboard is not None else None,
                   wandb_project=wandb_project if "wandb" in chosen else None, name=name, group=group)


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """A metrics line as the curves TensorBoard and W&B show: `train/*` every `log_every` steps, and at each rung
    `eval/*` (every evaluation metric with its interval, `_low` and `_high`) and `rung/*` (the interval's mean
    loss, images/s, data-wait share, time, and on GPU TFLOP/s, MFU and peak memory)."""
    event = record.get("event")
    if event not in ("train", "rung"):
        return {}
    out = {}
    for key, value in record.items():
        if key in _NOT_SCALARS or key == "event" or value is None or isinstance(value, bool) or \
                not isinstance(value, (int, float)) or key.endswith("_n"):
            continue
        if event == "train":
            out[f"train/{key}"] = float(value)
        elif any(key == m or key in (f"{m}_low", f"{m}_high") for m in EVALUATED):
            out[f"eval/{key}"] = float(value)
        else:
            out[f"rung/{key}"] = float(value)
    return out


class MetricsLog:
    """A run's one metrics writer: `metrics.jsonl` (one JSON object per line: `train` every `log_every` steps,
    `rung`, `diverged`) and `config.json` in the run directory, and the same scalars by samples seen to
    TensorBoard and W&B (`ReportTo`); written by the main rank only.

    A resumed run keeps what was written up to its checkpoint and writes the rest again: the JSON lines past it
    are dropped, and TensorBoard is told to purge its events past it (a `SessionLog.START` at the next sample,
    torch's `purge_step`), so that every curve holds each step once."""

    def __init__(self, out: Path | None, runtime: Runtime, report_to: ReportTo | None = None):
        self.path = out / METRICS if out is not None and runtime.is_main else None
        self.report_to = (report_to or ReportTo()) if runtime.is_main else ReportTo()
        self.tensorboard: Any = None
        self.wandb: Any = None
        self.run_id = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:16] if out is not None else None

    def start(self, samples_seen: int, resolved: dict[str, Any]) -> None:
        """Open the run's log at `samples_seen` (0, or where a resumed run's checkpoint stands)."""
        self._truncate(samples_seen)
        if self.path is not None:  # the resolved config next to the checkpoints (litgpt's habit): what produced them
            self.path.parent.mkdir(parents=True, exist_ok=True)
            (self.path.parent / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
        if self.report_to.tensorboard is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(self.report_to.tensorboard, purge_step=samples_seen + 1, flush_secs=30)
        if self.report_to.wandb_project is not None:
            import wandb

            self.wandb = wandb.init(project=self.report_to.wandb_project, name=self.report_to.name,
                                    group=self.report_to.group, config=resolved, id=self.run_id, resume="allow",
                                    dir=str(self.path.parent) if self.path is not None else None)
            self.wandb.define_metric("samples_seen")
            self.wandb.define_metric("*", step_metric="samples_seen")

    def write(self, record: dict[str, Any]) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(jsonable(record)) + "\n")
        values = scalars(record)
        if not values:
            return
        if self.tensorboard is not None:
            for tag, value in values.items():
                self.tensorboard.add_scalar(tag, value, global_step=record["samples_seen"])
            if record["event"] == "rung":
                self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log({**values, "samples_seen": record["samples_seen"]})

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None

    def _truncate(self, samples_seen: int) -> None:
        """Keep the lines up to a resumed checkpoint: the rest will be written again by this run."""
        if self.path is None or not self.path.exists():
            return
        records = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        kept = [r for r in records if 0 < r["samples_seen"] <= samples_seen and r["event"] != "diverged"]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
