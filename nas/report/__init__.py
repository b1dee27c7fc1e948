"""A study's report: its tables beside the ViTamin paper's numbers, and which of the paper's findings it reproduces.

The paper's side comes from a data file (`studies/paper/vitamin.yaml`: the authors' published benchmark, the
cost of their ablation variants, and the findings as checkable claims), never from this code; the study's
side is computed from its results database. A claim is an ordering of labelled candidates (tiers, best
first) at every budget, or a metric that rises with data or with a cost. The same check runs on both sides:

    paper = load_paper(PAPER)
    text = report(ResultStore.open("runs/vitamin_design_choices", readonly=True), paper, figures)

`figures` maps figure names to paths relative to the report (`plots.study.study_figures` writes them and names
them): the report links `group:NAME` in that group's section and the rest at its end.

`paper` reads the paper's data file, `claims` checks a claim on either side, `render` writes the markdown.
"""

from nas.report.claims import Verdict, check, paired_measurements, verdicts
from nas.report.paper import PAPER, Claim, Paper, load_paper
from nas.report.render import report

__all__ = ["PAPER", "Claim", "Paper", "Verdict", "check", "load_paper", "paired_measurements", "report", "verdicts"]
