"""`nas.stratified`: an order of a space's candidates whose every prefix covers the design choices evenly."""

from __future__ import annotations

import collections
from pathlib import Path

from nas.space import SearchSpace
from nas.stratified import arch_fields, strata, stratified_order

SPACE = SearchSpace.load(Path(__file__).resolve().parents[1] / "search_spaces" / "tiny.yaml")
#: The space at one resolution (what the tabular benchmark orders); its two resolutions are a fidelity axis.
ARCHS = list(dict.fromkeys(arch.replace(image_size=64) for arch in SPACE.enumerate()))


def test_fields_another_field_determines_are_not_counted_twice():
    names = set(strata(ARCHS)[0])
    # the kernel follows the block, the heads the width, the stem's width the first stage's: left out
    assert {"stages.0.block", "stages.1.block", "stages.1.depth", "transformer.depth", "transformer.mlp",
            "stages.0.width", "image_gmacs_bin"} <= names
    assert not names & {"stages.0.kernel", "stem_width", "transformer.heads", "transformer.mlp_ratio",
                        "stages.1.kernel", "stages.1.expansion", "image_size"}
    assert arch_fields(ARCHS[0])["stages.count"] == 2 and arch_fields(ARCHS[0])["transformer.depth"] in (2, 3, 4)


def test_every_prefix_is_balanced_on_each_choice_and_the_order_is_seeded():
    order = stratified_order(ARCHS, seed=0)
    assert sorted(a.arch_id for a in order) == sorted(a.arch_id for a in ARCHS)
    keys = dict(zip([a.arch_id for a in ARCHS], strata(ARCHS)))
    for prefix in (6, 12, 32):
        counts = collections.defaultdict(collections.Counter)
        for arch in order[:prefix]:
            for name, value in keys[arch.arch_id].items():
                counts[name][value] += 1
        for name in ("stages.0.block", "stages.1.block", "stages.1.depth", "transformer.depth", "transformer.mlp",
                     "stages.0.width", "image_gmacs_bin"):
            values = counts[name]
            assert max(values.values()) - min(values.values()) <= 1 and len(values) == min(
                prefix, len({k[name] for k in keys.values()})), (prefix, name, values)
    assert stratified_order(ARCHS, seed=0) == order and stratified_order(ARCHS, seed=1) != order
