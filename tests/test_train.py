"""The training loop: recipe, rungs, failures as results, checkpoints, LTT, compile fallback.

Resume after a real kill, data-parallel training and learning have their own files (test_train_*.py).
"""

from __future__ import annotations

import errno
import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch
from train_helpers import TINY_ARCH, TINY_TEXT, factory, random_pairs

from nas.disk import DiskFull
from nas.errors import ConfigError
from nas.export import export
from nas.models import build_clip
from nas.train import OOMError, train
from nas.train.checkpoint import load_checkpoint, save_checkpoint
from nas.train.recipe import LOGIT_SCALE_MAX, build_model, cosine_schedule, param_groups
from nas.train.runtime import is_oom, setup_runtime
from nas.train.trainer import Trainer
from nas.train_config import TrainConfig

FP32 = setup_runtime("fp32", device="cpu")


def tiny_config(**changes) -> TrainConfig:
    values = dict(samples=64, batch_size=16, warmup=1, drop_path=0.0, log_every=1)
    values.update(changes)
    return TrainConfig(**values)


def trainer(config: TrainConfig, seed: int = 0) -> Trainer:
    torch.manual_seed(seed)
    return Trainer(build_model(TINY_ARCH, TINY_TEXT, config), config, FP32)


def batch(size: int = 16, index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return next(random_pairs(index * size, size))


# -- configuration and recipe -------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "field"), [
    ({"samples": 0}, "samples"), ({"loss": "triplet"}, "loss"), ({"accum_freq": 3}, "accum_freq"),
    ({"warmup": 4}, "warmup"), ({"rungs": (65,)}, "rungs"), ({"precision": "fp16"}, "precision"),
    ({"betas": (0.9, 1.2)}, "betas"), ({"drop_path": 1.0}, "drop_path"),
])
def test_bad_config_names_the_field(changes, field):
    with pytest.raises(ConfigError) as err:
        tiny_config(**changes)
    assert err.value.field == field


def test_defaults_are_the_openclip_recipe_of_the_paper():
    config = TrainConfig(samples=1_000_000)
    assert (config.lr, config.betas, config.eps, config.weight_decay, config.warmup) == (5e-4, (0.9, 0.98), 1e-6,
                                                                                         0.2, 500)
    assert (config.loss, config.drop_path, config.precision) == ("clip", 0.1, "auto")
    assert FP32.autocast().__class__.__name__ == "nullcontext"  # fp32 on CPU


def test_weight_decay_spares_norms_biases_and_the_logit_scale():
    model = build_clip(TINY_ARCH, TINY_TEXT)
    no_decay, decay = param_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    spared = {names[id(p)] for p in no_decay["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    assert (no_decay["weight_decay"], decay["weight_decay"]) == (0.0, 0.2)
    assert spared | decayed == set(names.values()) and not spared & decayed
    assert "logit_scale" in spared
    assert all(n in spared for n in names.values() if n.endswith(".bias") or ".ln_" in n or "norm" in n)
    assert {"text.token_embedding.weight", "visual.head.proj.weight", "visual.trunk.pos_embed"} <= decayed


def test_schedule_is_open_clip_trains_cosine_step_for_step():
    from open_clip_train.scheduler import cosine_lr

    steps, warmup, base = 20, 5, 1e-3
    ours = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base)
    scheduler = torch.optim.lr_scheduler.LambdaLR(ours, cosine_schedule(warmup, steps))
    theirs = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base)
    adjust = cosine_lr(theirs, base, warmup, steps)
    for step in range(steps):
        adjust(step)
        assert ours.param_groups[0]["lr"] == pytest.approx(theirs.param_groups[0]["lr"], abs=1e-12)
        ours.step()
        scheduler.step()


def test_logit_scale_is_clamped_at_ln_100():
    t = trainer(tiny_config(lr=0.5))
    with torch.no_grad():
        t.model.logit_scale.fill_(LOGIT_SCALE_MAX - 1e-4)
    for index in range(3):
        t.train_step([batch(index=index)])
    assert t.model.logit_scale.item() <= LOGIT_SCALE_MAX


def _gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The gradients of the last step (Adam's first step is sign-like, so gradients are compared, not weights)."""
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_gradients(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]):
    assert a.keys() == b.keys()
    for name in a:  # float32 sums in another order: equal to 1e-5 of the tensor's largest entry
        assert (a[name] - b[name]).abs().max() <= 1e-5 * a[name].abs().max() + 1e-9, name


def test_gradient_accumulation_takes_the_step_of_the_whole_batch():
    """Four micro-batches of 4 give the gradient of one batch of 16: all 16 are each one's negatives."""
    images, tokens = batch(16)
    whole = trainer(tiny_config())
    whole.train_step([(images, tokens)])
    split = trainer(tiny_config(accum_freq=4))
    split.train_step([(images[i : i + 4], tokens[i : i + 4]) for i in range(0, 16, 4)])
    _assert_same_gradients(_gradients(whole.model), _gradients(split.model))
    assert "logit_scale" in _gradients(split.model)


def test_gradient_checkpointing_takes_the_same_step():
    plain, checkpointed = trainer(tiny_config()), trainer(tiny_config(grad_checkpointing=True))
    assert checkpointed.model.visual.trunk.grad_checkpointing
    for t in (plain, checkpointed):
        t.train_step([batch()])
    _assert_same_gradients(_gradients(plain.model), _gradients(checkpointed.model))


def test_siglip_loss_option_trains_a_logit_bias():
    t = trainer(tiny_config(loss="siglip"))
    assert t.model.logit_bias.item() == -10.0 and t.model.logit_scale.exp().item() == pytest.approx(10.0)
    loss = t.train_step([batch()])
    assert torch.isfinite(loss) and t.model.logit_bias.item() != -10.0


# -- rungs, failures ----------------------------------------------------------------------------------


def test_rungs_report_metrics_and_a_rung_can_stop_the_run(tmp_path):
    seen = []
    result = train(TINY_ARCH, TINY_TEXT, factory(16), tiny_config(samples=96, rungs=(32, 64)), out=tmp_path,
                   on_rung=lambda metrics: seen.append(metrics) or metrics["samples_seen"] >= 64, device="cpu")
    assert result.status == "stopped_early" and result.samples_seen == 64 and result.step == 4
    assert [m["samples_seen"] for m in seen] == [32, 64] and [m["budget"] for m in seen] == [32, 64]
    for metrics in seen:
        assert {"loss", "lr", "logit_scale", "wall_s", "train_s", "images_per_s", "step"} <= set(metrics)
        assert math.isfinite(metrics["loss"]) and metrics["images_per_s"] > 0
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["samples_seen"] for r in lines if r["event"] == "rung"] == [32, 64]
    assert [r["step"] for r in lines if r["event"] == "train"] == [1, 2, 3, 4]
    assert json.loads((tmp_path / "config.json").read_text())["arch_id"] == TINY_ARCH.arch_id


def test_a_rung_reports_each_metric_with_its_interval_and_its_packed_hits(tmp_path):
    from torch.utils.data import TensorDataset

    from nas.data import ZeroShotSet
    from nas.presets import TextTower
    from nas.uncertainty import unpack_hits, wilson_interval

    text = TextTower(width=32, layers=1, heads=2, context_length=8)  # the CLIP vocabulary, for the real tokenizer
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    images = torch.randn(len(labels), 3, TINY_ARCH.image_size, TINY_ARCH.image_size,
                         generator=torch.Generator().manual_seed(0))
    zeroshot = ZeroShotSet(TensorDataset(images, labels), ["red circle", "blue square", "green star"], ["a {}."])
    result = train(TINY_ARCH, text, factory(16), tiny_config(samples=32), out=tmp_path, zeroshot=zeroshot,
                   device="cpu")
    final = result.final
    hits = unpack_hits(final["hits"]["zeroshot_top1"], final["zeroshot_top1_n"])
    assert final["zeroshot_top1_n"] == 7 and final["zeroshot_top1"] == pytest.approx(hits.mean())
    assert (final["zeroshot_top1_low"], final["zeroshot_top1_high"]) == wilson_interval(int(hits.sum()), 7)
    assert set(final["hits"]) == {"zeroshot_top1", "zeroshot_top5"}
    rung = next(json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
                if json.loads(line)["event"] == "rung")
    assert rung["hits"] == final["hits"]


def test_budget_that_is_not_a_multiple_of_the_batch_ends_exactly():
    result = train(TINY_ARCH, TINY_TEXT, factory(16), tiny_config(samples=40), device="cpu")
    assert (result.status, result.samples_seen, result.step) == ("completed", 40, 3)
    assert result.final["samples_seen"] == 40


def test_non_finite_loss_ends_the_run_as_diverged(tmp_path):
    def poisoned(start):
        for index, (images, tokens) in enumerate(random_pairs(start, 16)):
            yield (images * float("nan") if index >= 2 else images), tokens

    result = train(TINY_ARCH, TINY_TEXT, poisoned, tiny_config(samples=160, rungs=(32, 96)), out=tmp_path,
                   device="cpu")
    assert result.status == "diverged"
    assert result.step == 3 and result.samples_seen == 48
    assert [r["samples_seen"] for r in result.rungs] == [32]
    events = [json.loads(line)["event"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert events[-1] == "diverged"
    assert load_checkpoint(tmp_path / "checkpoint.pt")["samples_seen"] == 32  # the last finite state


def test_out_of_memory_raises_a_typed_error_with_the_batch_size():
    """The image tower runs out of memory (raised from a forward hook, as the CUDA allocator raises it)."""
    from nas.models import VisionTower

    def exhausted(module, inputs):
        if isinstance(module, VisionTower):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    hook = torch.nn.modules.module.register_module_forward_pre_hook(exhausted)
    try:
        with pytest.raises(OOMError) as err:
            train(TINY_ARCH, TINY_TEXT, factory(16), tiny_config(batch_size=32, accum_freq=2), device="cpu")
    finally:
        hook.remove()
    assert (err.value.batch_size, err.value.micro_batch_size, err.value.phase) == (32, 16, "train")
    assert "batch size 32" in str(err.value) and isinstance(err.value.__cause__, torch.OutOfMemoryError)


@pytest.mark.parametrize("err", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory"),
    RuntimeError("std::bad_alloc"), RuntimeError("can't start new thread"),
    RuntimeError("could not create a primitive"), OSError(errno.ENOMEM, "Cannot allocate memory")])
def test_every_form_of_running_out_of_memory_reads_as_out_of_memory(err):
    assert is_oom(err)


@pytest.mark.parametrize("err", [RuntimeError("mat1 and mat2 shapes cannot be multiplied"),
                                 OSError(errno.ENOENT, "No such file or directory"), ValueError("out of memory")])
def test_other_errors_do_not_read_as_out_of_memory(err):
    assert not is_oom(err)

# -- checkpoints --------------------------------------------------------------------------------------


WRITER = """
import sys, torch
from nas.train.checkpoint import save_checkpoint
i = 0
while True:
    i += 1
    save_checkpoint({"i": i, "weights": torch.full((2_000_000,), float(i))}, sys.argv[1])
"""


@pytest.mark.subprocess
def test_checkpoint_survives_sigkill_at_any_moment(tmp_path):
    """A writer killed mid-save leaves the previous checkpoint or the new one, whole."""
    path = tmp_path / "checkpoint.pt"
    for attempt in range(4):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
        deadline = time.time() + 60
        while not path.exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.1 + 0.15 * attempt)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        state = load_checkpoint(path)
        assert torch.equal(state["weights"], torch.full((2_000_000,), float(state["i"])))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["checkpoint.pt"]


def test_checkpoint_holds_the_run_and_loads_weights_only(tmp_path):
    config = tiny_config(samples=32)
    train(TINY_ARCH, TINY_TEXT, factory(16), config, out=tmp_path, device="cpu")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "samples_seen", "step", "arch", "config"} <= set(state)
    assert state["samples_seen"] == 32 and state["scheduler"]["last_epoch"] == 2
    assert {"torch", "python", "numpy"} <= set(state["rng"][0])
    with pytest.raises(ConfigError, match="another lr"):
        train(TINY_ARCH, TINY_TEXT, factory(16), tiny_config(samples=32, lr=1e-3), out=tmp_path, device="cpu")
    # What does not decide the trajectory may change: logging, rungs, accumulation.
    again = train(TINY_ARCH, TINY_TEXT, factory(16), tiny_config(samples=32, log_every=5, rungs=(16,), accum_freq=2),
                  out=tmp_path, device="cpu")
    assert (again.resumed_from, again.samples_seen, again.step) == (32, 32, 2)


def test_save_checkpoint_replaces_the_file_in_one_rename(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint({"i": 1}, path)
    save_checkpoint({"i": 2}, path)
    assert load_checkpoint(path) == {"i": 2}
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]


def test_a_full_disk_is_one_line_and_leaves_the_previous_checkpoint(small_filesystem):
    """A real 2 MB filesystem: a 4 MB checkpoint does not fit. torch alone fails with "unexpected pos" and leaves a
    half-written file; here the error names the path and the space left, the temporary file is gone (its space
    back) and the previous checkpoint stands."""
    path = small_filesystem / "run" / "checkpoint.pt"
    save_checkpoint({"weights": torch.zeros(100_000)}, path)  # 400 KB
    with pytest.raises(DiskFull, match=rf"^disk full: cannot write {path} \(1\.\d MB free on its filesystem\); "
                                       "free space, then continue with --resume$"):
        save_checkpoint({"weights": torch.zeros(1_000_000)}, path)
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]
    assert load_checkpoint(path)["weights"].shape == (100_000,)


# -- locked-text tuning, compile ----------------------------------------------------------------------


def test_lock_text_loads_and_freezes_the_pretrained_text_tower(tmp_path):
    torch.manual_seed(1)
    pretrained = build_clip(TINY_ARCH, TINY_TEXT)
    torch.save(pretrained.state_dict(), tmp_path / "pretrained.bin")
    config = tiny_config(lock_text=str(tmp_path / "pretrained.bin"))
    t = trainer(config)
    text_before = {n: p.clone() for n, p in t.model.text.named_parameters()}
    image_before = {n: p.clone() for n, p in t.model.visual.named_parameters()}
    for name, param in pretrained.text.state_dict().items():
        assert torch.equal(text_before[name], param), name
    assert not any(p.requires_grad for p in t.model.text.parameters())
    trained = {id(p) for group in t.optimizer.param_groups for p in group["params"]}
    assert not trained & {id(p) for p in t.model.text.parameters()}
    for index in range(2):
        t.train_step([batch(index=index)])
    assert all(torch.equal(p, text_before[n]) for n, p in t.model.text.named_parameters())
    assert any(not torch.equal(p, image_before[n]) for n, p in t.model.visual.named_parameters())



def test_pretrained_starts_from_an_exports_weights_and_refuses_another_arch(tmp_path):
    torch.manual_seed(1)
    pretrained = build_clip(TINY_ARCH, TINY_TEXT)
    export(pretrained.state_dict(), TINY_ARCH, TINY_TEXT, tmp_path / "export")  # safetensors, as exports are
    t = trainer(tiny_config(pretrained=str(tmp_path / "export")))
    for name, param in pretrained.state_dict().items():
        assert torch.equal(t.model.state_dict()[name], param), name
    assert all(p.requires_grad for p in t.model.parameters())  # a fine-tune trains everything
    other = TINY_ARCH.replace(embed_dim=24)
    export(build_clip(other, TINY_TEXT).state_dict(), other, TINY_TEXT, tmp_path / "other")
    with pytest.raises(ConfigError, match="does not match the run's arch"):
        build_model(TINY_ARCH, TINY_TEXT, tiny_config(pretrained=str(tmp_path / "other")))


def test_lock_text_with_a_mismatched_tower_is_a_config_error(tmp_path):
    other = build_clip(TINY_ARCH.replace(embed_dim=24), TINY_TEXT)
    torch.save(other.state_dict(), tmp_path / "other.bin")
    with pytest.raises(ConfigError, match="does not match"):
        build_model(TINY_ARCH, TINY_TEXT, tiny_config(lock_text=str(tmp_path / "other.bin")))


def failing_backend(graph_module, example_inputs):
    raise RuntimeError("InductorError: AssertionError (a compiler bug, as seen at 128 px)")


def test_compile_failure_falls_back_to_eager_and_is_recorded():
    from torch._dynamo import register_backend

    register_backend(failing_backend, name="nas_test_failing")
    torch._dynamo.reset()
    reference = train(TINY_ARCH, TINY_TEXT, factory(16), tiny_config(samples=48), device="cpu")
    result = train(TINY_ARCH, TINY_TEXT, factory(16),
                   tiny_config(samples=48, compile=True, compile_backend="nas_test_failing"), device="cpu")
    assert result.status == "completed" and result.samples_seen == 48
    assert result.compile["requested"] and not result.compile["compiled"]
    assert "InductorError" in result.compile["error"] and result.compile["compile_s"] > 0
    assert result.final["loss"] == pytest.approx(reference.final["loss"], rel=1e-5)
