"""Zero-cost proxies: each against a value worked out by hand on a network small enough to follow, then on
the real towers of the tiny search space."""

from __future__ import annotations

import math
import time

import pytest
import torch
from scipy.stats import norm
from timm.layers import LayerNormAct2d
from torch import nn

from nas.cost import cost
from nas.errors import ConfigError
from nas.models import build_vision_tower
from nas.proxies import ACTIVATIONS, naswot, synflow, zero_cost_scores
from nas.space import SearchSpace


def gelu(x: float) -> float:
    return x * norm.cdf(x)


def gelu_slope(x: float) -> float:
    return norm.cdf(x) + x * norm.pdf(x)


def two_layer(activation: type[nn.Module]) -> nn.Sequential:
    """2 -> 3 -> 1 with an activation after each layer; no biases, weights chosen to give readable codes."""
    net = nn.Sequential(nn.Linear(2, 3, bias=False), activation(), nn.Linear(3, 1, bias=False), activation())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        net[2].weight.copy_(torch.tensor([[1.0, -1.0, 1.0]]))
    return net


@pytest.mark.parametrize("activation", [nn.GELU, nn.ReLU])
def test_naswot_is_the_log_determinant_of_the_hamming_kernel(activation):
    # Hidden pre-activations W1 x: (1, 2) -> (1, 2, -1); (-1, 1) -> (-1, 1, -2); (2, -1) -> (2, -1, 3).
    # Output pre-activations [1, -1, 1] . act(h), GELU (ReLU gives the same signs):
    #   0.841 - 1.954 - 0.159 < 0;  -0.159 - 0.841 - 0.045 < 0;  1.954 + 0.159 + 2.996 > 0.
    # Codes over the 4 units: c1 = 1100, c2 = 0100, c3 = 1011. Units on which two inputs agree
    # (N_A - Hamming): K = [[4, 3, 1], [3, 4, 0], [1, 0, 4]], det K = 4*16 - 3*12 + 1*(0 - 4) = 24.
    images = torch.tensor([[1.0, 2.0], [-1.0, 1.0], [2.0, -1.0]])
    assert naswot(two_layer(activation), images) == pytest.approx(math.log(24), abs=1e-12)


def test_naswot_of_two_inputs_with_one_code_is_minus_infinity():
    images = torch.tensor([[1.0, 2.0], [1.0, 3.0], [2.0, -1.0]])  # the first two share every sign
    assert naswot(two_layer(nn.GELU), images) == -math.inf


def test_naswot_leaves_the_model_as_it_was():
    net = two_layer(nn.GELU).train()
    naswot(net, torch.randn(4, 2))
    assert net.training
    assert all(not module._forward_pre_hooks for module in net.modules())


def test_naswot_needs_an_activation():
    with pytest.raises(ConfigError, match="no activation layer"):
        naswot(nn.Linear(2, 2), torch.randn(3, 2))


def test_synflow_sums_theta_times_gradient_with_layernorm_bypassed():
    net = nn.Sequential(nn.Linear(2, 3), nn.GELU(), nn.LayerNorm(3), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0], [-1.0, 1.0]]))
        net[0].bias.copy_(torch.tensor([0.0, -1.0, 0.5]))
        net[2].weight.copy_(torch.tensor([3.0, -7.0, 0.1]))  # bypassed: never enters the score
        net[3].weight.copy_(torch.tensor([[-1.0, 2.0, 0.5]]))
        net[3].bias.fill_(-4.0)
    before = {name: p.clone() for name, p in net.state_dict().items()}
    # With |theta| and x = (1, 1): h = |W1| 1 + |b1| = (3, 1.5, 2.5), R = |W2| . gelu(h) + |b2|.
    # dR/dW2_j = gelu(h_j); dR/dW1_jk = |W2_j| gelu'(h_j) x_k, summed over k: |W2_j| gelu'(h_j) * (row sum of |W1|).
    h, w2, row_sums = (3.0, 1.5, 2.5), (1.0, 2.0, 0.5), (3.0, 0.5, 2.0)
    expected = sum(w * gelu(x) for w, x in zip(w2, h)) + sum(w * gelu_slope(x) * r for w, x, r in zip(w2, h, row_sums))
    assert synflow(net, torch.randn(5, 2)) == pytest.approx(expected, rel=1e-12)
    assert all(torch.equal(before[name], p) and p.dtype == torch.float32 for name, p in net.state_dict().items())


def test_synflow_keeps_the_activation_of_a_norm_act_layer():
    # 1x1 convs on a 2x2 all-ones image through timm's LayerNormAct2d (a LayerNorm, then GELU), weights
    # |(a, b)| and |(c, d)|: R = 4 (c gelu(a) + d gelu(b)), so the score is
    # 4 (c gelu(a) + d gelu(b) + a c gelu'(a) + b d gelu'(b)).
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), LayerNormAct2d(2, act_layer="gelu"),
                        nn.Conv2d(2, 1, 1, bias=False))
    a, b, c, d = 0.75, 1.25, 2.0, 0.375  # exact in float32
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([a, -b]).reshape(2, 1, 1, 1))
        net[2].weight.copy_(torch.tensor([-c, d]).reshape(1, 2, 1, 1))
    expected = 4 * (c * gelu(a) + d * gelu(b) + a * c * gelu_slope(a) + b * d * gelu_slope(b))
    assert synflow(net, torch.randn(3, 1, 2, 2)) == pytest.approx(expected, rel=1e-12)


class Square(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


def test_synflow_past_float64_is_infinite_not_nan():
    # (10 x)^2 twelve times over is 10^(2^13 - 2): beyond float64, as GeGLU products grow in deep towers
    net = nn.Sequential(*[layer for _ in range(12) for layer in (nn.Linear(1, 1, bias=False), Square())])
    for module in net:
        if isinstance(module, nn.Linear):
            nn.init.constant_(module.weight, 10.0)
    assert synflow(net, torch.ones(1, 1)) == math.inf


@pytest.fixture(scope="module")
def tiny_archs(repo):
    space = SearchSpace.load(repo / "search_spaces" / "tiny.yaml")
    by_gmacs = sorted(space.enumerate(), key=lambda arch: cost(arch).image_gmacs)
    return by_gmacs[0], by_gmacs[-1]


def activation_units(arch) -> int:
    """N_A: the units NASWOT codes, per image."""
    units = []
    tower = build_vision_tower(arch)
    for module in tower.modules():
        if isinstance(module, ACTIVATIONS):
            module.register_forward_pre_hook(lambda _module, inputs: units.append(inputs[0].numel()))
    with torch.no_grad():
        tower(torch.zeros(1, 3, arch.image_size, arch.image_size))
    return sum(units)


def test_scores_are_deterministic_and_leave_the_callers_rng_alone(tiny_archs, one_thread):
    arch = tiny_archs[0]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = zero_cost_scores(arch, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert zero_cost_scores(arch, seed=0) == first
    assert zero_cost_scores(arch, seed=1) != first


def test_scores_of_tiny_space_candidates(tiny_archs, one_thread):
    for arch in tiny_archs:
        start = time.perf_counter()
        scores = zero_cost_scores(arch, batch_size=64)
        seconds = time.perf_counter() - start
        print(f"{arch.name()}: naswot {scores['naswot']:.1f}, synflow {scores['synflow']:.3e} in {seconds:.2f} s")
        # Hadamard: det K <= prod K_ii = N_A^64; equality would need every pair of codes to differ in half the units
        assert 0 < scores["naswot"] < 64 * math.log(activation_units(arch))
        assert 0 < scores["synflow"] < math.inf


def test_unknown_proxy_and_bad_batch_are_named(tiny_archs):
    with pytest.raises(ConfigError, match="names.*unknown proxies snip; allowed: naswot, synflow"):
        zero_cost_scores(tiny_archs[0], names=("naswot", "snip"))
    with pytest.raises(ConfigError, match="batch_size"):
        zero_cost_scores(tiny_archs[0], batch_size=1)
