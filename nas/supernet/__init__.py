"""A weight-sharing supernet of a search space (one-shot NAS): one training, every candidate's weights.

    supernet = Supernet(SearchSpace.load("search_spaces/tiny.yaml"), SupernetConfig(image_size=32))
    out = supernet(images, texts, arch)                  # a subnet: its paths chosen, the weights sliced
    state = supernet.subnet_state_dict(arch)             # the stand-alone `build_clip(arch)`'s state dict
    result = train_supernet(study, SupernetConfig(random_subnets=2), out="runs/sn")   # the sandwich rule
    result = train_supernet(study, SupernetConfig(random_subnets=2), out="runs/sn2", workers=4)  # 4 Ray ranks
    supernet = load_supernet("runs/sn")                  # its newest checkpoint
    records = rank(supernet, zeroshot, sample_subnets(supernet, 1000))   # nas.supernet.rank
    search = evolve(supernet, SubnetScorer(supernet, zeroshot), within_limits(supernet, max_gmacs=0.5))
    export_subnet(supernet, arch, "runs/sn/a1b2")        # an open_clip export (nas.supernet.export)

`config` (`SupernetConfig`, torch-free), `supernet` (`Supernet`: the shared weights, slicing, subnets),
`sandwich` (the sandwich step with in-place distillation, on one rank or several), `training` (the run on
`nas.train`'s loop, and reading it back), `data_parallel` (the run on Ray Train ranks), `rank` (zero-shot and
retrieval scores with inherited weights, the Pareto front), `evolution` (NSGA-II over the space's choices under
cost limits), `export` (a subnet out as a stand-alone model).
"""

from nas.supernet.config import SupernetConfig
from nas.supernet.supernet import Supernet
from nas.supernet.training import load_supernet, train_supernet

__all__ = ["Supernet", "SupernetConfig", "load_supernet", "train_supernet"]
