"""Precision and memory layout as settings: fp32 stays bit-identical and keeps every cache key,
bf16 autocast and channels-last run on the CPU and change what they should."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from msbench.runner.cells import victim_key
from msbench.compute import Compute, using
from msbench.models import build_model
from msbench.runner.suite import parse_suite
from msbench.training import Recipe, fit

SHAPE = (1, 28, 28)


def _data(n: int = 64):
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, *SHAPE), dtype=torch.uint8, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def _model() -> torch.nn.Module:
    torch.manual_seed(3)
    return build_model("smallcnn", SHAPE, 10, (0.1307,), (0.3081,))


def _trained(compute: Compute | None, seen: list | None = None) -> torch.nn.Module:
    model = _model()
    if seen is not None:
        model.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    images, labels = _data()
    recipe = Recipe(epochs=1, batch_size=16, lr=0.05)
    if compute is None:
        return fit(model, images, labels, recipe, seed=1)
    with using(compute):
        return fit(compute.layout(model), images, labels, recipe, seed=1)


def test_fp32_is_bit_identical_to_no_setting_at_all(one_thread):
    plain, fp32 = _trained(None), _trained(Compute("fp32"))
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), fp32.state_dict().values()))


def test_bf16_autocasts_every_training_step_on_the_cpu(one_thread):
    seen: list = []
    bf16 = _trained(Compute("bf16"), seen)
    assert seen and set(seen) == {torch.bfloat16}  # the model's logits in every step
    plain = _trained(None)
    weights = [(a, b) for a, b in zip(plain.state_dict().values(), bf16.state_dict().values()) if a.is_floating_point()]
    assert all(torch.isfinite(b).all() for _, b in weights) and any(not torch.equal(a, b) for a, b in weights)
    assert all(b.dtype == torch.float32 for _, b in weights)  # autocast computes in bf16, keeps fp32 weights


def test_channels_last_stores_convolutions_nhwc_and_computes_the_same(one_thread):
    model = _model()
    nhwc = Compute(channels_last=True).layout(_model())
    convs = [m.weight for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert any(not w.is_contiguous() for w in convs)  # (a 1-channel kernel is both layouts at once; the 16-channel one is not)
    x = _data(8)[0].float() / 255
    torch.testing.assert_close(nhwc.eval()(x), model.eval()(x), rtol=1e-4, atol=1e-5)


def test_only_a_non_default_setting_enters_the_victim_key():
    base = {"matrix": {"datasets": ["mnist"], "archs": ["smallcnn"], "defenses": ["vanilla"], "attacks": ["knockoff"]}}
    key = lambda run: victim_key(parse_suite({**base, "run": run}, "s.toml"), "mnist", "smallcnn", ["vanilla"], 0)  # noqa: E731
    assert key({}) == key({"precision": "fp32", "channels_last": False})
    assert len({key({}), key({"precision": "bf16"}), key({"channels_last": True})}) == 3


def test_a_precision_outside_the_vocabulary_is_one_line():
    from msbench.config import SuiteError

    base = {"matrix": {"datasets": ["mnist"], "archs": ["smallcnn"], "defenses": ["vanilla"], "attacks": ["knockoff"]}}
    with pytest.raises(SuiteError, match=r"run\.precision"):
        parse_suite({**base, "run": {"precision": "fp16"}}, "s.toml")


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.gpu
@CUDA
def test_training_on_cuda_matches_the_cpu_closely():
    images, labels = _data()
    recipe = Recipe(epochs=1, batch_size=16, lr=0.05)
    cpu = fit(_model(), images, labels, recipe, seed=1)
    gpu = fit(_model(), images, labels, recipe, device="cuda", seed=1).cpu()
    for a, b in zip(cpu.state_dict().values(), gpu.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
@CUDA
def test_bf16_autocast_on_cuda_trains_and_keeps_fp32_weights():
    seen: list = []
    model = _model().cuda()
    model.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    images, labels = _data()
    with using(Compute("bf16", device_type="cuda")):
        fit(model, images, labels, Recipe(epochs=1, batch_size=16, lr=0.05), device="cuda", seed=1)
    assert set(seen) == {torch.bfloat16} and all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


def test_hand_made_updates_keep_the_parameters_dtype_under_bf16():
    """PCGrad's merged direction and DFME's estimated gradient are laid onto fp32 parameters even when
    autocast made them (or the output they go through) bf16: InI and DFME train at bf16 too."""
    from msbench.training import Optimiser

    layer = torch.nn.Linear(4, 3)
    optimiser = Optimiser.milestone_sgd(layer.parameters(), 0.1, 0.0, 0.0)
    direction = torch.ones(sum(p.numel() for p in layer.parameters()), dtype=torch.bfloat16)
    before = [p.detach().clone() for p in layer.parameters()]
    optimiser.step_along(list(layer.parameters()), direction)
    assert all(p.grad.dtype == torch.float32 for p in layer.parameters())
    assert all(torch.allclose(b - 0.1, p) for b, p in zip(before, layer.parameters()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(torch.ones(2, 4))
    assert out.dtype == torch.bfloat16
    optimiser.step_through(out, torch.ones(2, 3))  # an fp32 estimate through a bf16 output
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in layer.parameters())


@pytest.mark.skipif(not (Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh").exists(), reason="no script")
def test_the_gpu_check_rehearses_every_step_on_the_cpu(tmp_path):
    """`benchmarks/gpu_check.sh --dry-run`: every step of the GPU check at toy size on the CPU, so the
    script a GPU machine runs once has run before it gets there."""
    from tests.conftest import data_root

    root = data_root()
    if root is None or not (root / "EMNIST-letters").exists() or not (root / "KMNIST").exists():
        pytest.skip("MNIST, EMNIST-letters and KMNIST's test split not found: set MSBENCH_DATA")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    done = subprocess.run(["bash", str(script), "--dry-run", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "MSBENCH_DATA": str(root), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = (tmp_path / "dry-run.md").read_text()
    assert "0 step(s) failed" in report and "CPU rehearsal" in report
    for title in ("GPU-marked tests (ok", "Smoke suite (ok", "Paper-scale slice (ok", "Table 4: inference time (ok",
                  "Training epoch: fp32 vs bf16 (ok"):
        assert f"## {title}" in report
    assert "| ini |" in report  # InI's timing victim trained at the slice's bf16


def test_a_training_set_stays_put_on_the_cpu():
    from msbench.compute import resident

    data = torch.zeros(10, 1, 28, 28, dtype=torch.uint8)
    assert resident(data, "cpu") is data  # no copy at all: CPU results cannot change


@pytest.mark.gpu
@CUDA
def test_a_training_set_that_fits_moves_to_the_gpu_once():
    from msbench.compute import resident

    data = torch.zeros(60000, 1, 28, 28, dtype=torch.uint8)
    assert resident(data, "cuda").device.type == "cuda"


def test_the_victim_answers_at_full_precision_under_the_attackers_autocast():
    from msbench.defenses import Softmax
    from msbench.oracle import Oracle

    victim = Softmax(_model()).eval()
    x = _data(8)[0].float() / 255
    plain = Oracle(victim, "soft", 100, 10)(x)
    with using(Compute("bf16")), Compute("bf16").autocast():
        answered = Oracle(victim, "soft", 100, 10)(x)
    assert answered.dtype == torch.float32 and torch.equal(answered, plain)
