"""The prepared GPU check: every CUDA path of msbench once, in one call, with a report to commit.

    bash benchmarks/gpu_check.sh             # on a machine with one GPU: at most about 8 minutes
    bash benchmarks/gpu_check.sh --dry-run   # the same steps on the CPU at toy size (CI runs this)

Writes ``benchmarks/gpu/<device>.md`` (``--out`` elsewhere; a dry run writes ``dry-run.md`` there):
1. the GPU-marked tests (``pytest -m gpu``);
2. the smoke suite with ``--device cuda`` beside the README's CPU figures;
3. the paper-scale slice (``suites/gpu-slice.toml``: ResNet-18 MNIST victim with the paper's recipe,
   KnockoffNets 50,000 soft) beside the paper's 99.39%;
4. Table 4 (``msbench time`` on the slice) at batch 1 and 128, ratios to Vanilla;
5. seconds per training epoch of ResNet-18 in fp32 and bf16.
Each step is timed and its failure recorded, never hidden; a step that would pass the time left is
skipped and the report says so. A dry run shrinks every size (and uses the small CNN) so the steps,
not the numbers, are what it checks.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pandas as pd
import tomli_w
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msbench  # noqa: E402
from msbench.compute import Compute, using  # noqa: E402
from msbench.models import build_model  # noqa: E402
from msbench.training import Recipe, fit  # noqa: E402

README_SMOKE = {"benign": 97.82, "soft": 97.06, "hard": 96.24}  # README, 2-core CPU
PAPER_MNIST_KNOCKOFF_SOFT = 99.39  # the InI paper, Table 2


def _suite(folder: Path, base: str, name: str, changes: dict) -> Path:
    """A suite extending ``suites/<base>`` with ``changes`` (the dry run's toy sizes, the device)."""
    path = folder / f"{name}.toml"
    path.write_text(tomli_w.dumps({"extends": str(ROOT / "suites" / base), "name": name, **changes}))
    return path


def step_tests(dry: bool, work: Path, device: str) -> str:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "-o", "addopts="],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-300:]
    if done.returncode not in (0, 5):  # 5: no test collected
        raise RuntimeError(f"pytest -m gpu failed: {tail}")
    return f"`pytest -m gpu`: {tail}"


def step_smoke(dry: bool, work: Path, device: str) -> str:
    changes = {"run": {"device": device}}
    if dry:
        changes = {"run": {"device": "cpu", "train_subset": 1000, "test_subset": 500}, "victim": {"epochs": 1},
                   "clone": {"epochs": 1}, "attacks": {"knockoff": {"budget": 500}}}
    frame = msbench.run_suite(_suite(work, "smoke.toml", "smoke-check", changes), out=work / "smoke", report=False,
                              echo=lambda *_: None)
    row = {r.label_mode: r for r in frame.itertuples()}
    lines = ["| | benign | clone soft | clone hard | seconds (victim + attacks) |", "|---|---|---|---|---|",
             f"| README, 2-core CPU | {README_SMOKE['benign']:.2f} | {README_SMOKE['soft']:.2f} | {README_SMOKE['hard']:.2f} | 51 |",
             f"| this run ({device if not dry else 'cpu, toy size'}) | {row['soft'].benign_acc:.2f} | {row['soft'].clone_acc:.2f} | "
             f"{row['hard'].clone_acc:.2f} | {frame['victim_seconds'].iloc[0] + frame['attack_seconds'].sum():.1f} |"]
    return "\n".join(lines)


def step_slice(dry: bool, work: Path, device: str) -> str:
    changes = {"run": {"device": device}}
    if dry:
        changes = {"matrix": {"archs": ["smallcnn"]}, "run": {"device": "cpu", "train_subset": 1000, "test_subset": 500},
                   "victim": {"epochs": 1}, "clone": {"epochs": 1}, "attacks": {"knockoff": {"budget": 500}}}
    frame = msbench.run_suite(_suite(work, "gpu-slice.toml", "slice-check", changes), out=work / "slice", report=False,
                              echo=lambda *_: None)
    r = frame.iloc[0]
    return (f"| | benign | clone (KnockoffNets soft) | victim s | attack s |\n|---|---|---|---|---|\n"
            f"| the paper (ResNet-18, GPU, fp32) | 99.46 | {PAPER_MNIST_KNOCKOFF_SOFT:.2f} | | |\n"
            f"| this run (the slice's bf16) | {r.benign_acc:.2f} | {r.clone_acc:.2f} | {r.victim_seconds:.1f} | {r.attack_seconds:.1f} |")


def step_timing(dry: bool, work: Path, device: str) -> str:
    changes = {"run": {"device": device}}
    if dry:
        changes = {"run": {"device": "cpu", "train_subset": 1000, "test_subset": 500},
                   "timing": {"archs": ["smallcnn"], "repeats": 3, "warmup": 1, "train_subset": 500}}
    msbench.time_suite(_suite(work, "gpu-slice.toml", "timing-check", changes), out=work / "timing")
    timing = pd.read_csv(work / "timing" / "timing.csv")
    table = timing.pivot_table(index="defense", columns="batch_size", values=["ms_per_query", "slowdown"])
    lines = ["| defense | " + " | ".join(f"batch {b}: ms per call, × Vanilla" for b in sorted(timing["batch_size"].unique())) + " |",
             "|---|" + "---|" * timing["batch_size"].nunique()]
    for defense in table.index:
        cells = [f"{table.loc[defense, ('ms_per_query', b)]:.3f}, {table.loc[defense, ('slowdown', b)]:.2f}×"
                 for b in sorted(timing["batch_size"].unique())]
        lines.append(f"| {defense} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nDevice recorded: {', '.join(map(str, timing['device'].unique()))}."


def step_epochs(dry: bool, work: Path, device: str) -> str:
    arch, n = ("smallcnn", 512) if dry else ("resnet18", 20000)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    rows = []
    for precision in ("fp32", "bf16"):
        model = build_model(arch, (1, 28, 28), 10, (0.1307,), (0.3081,)).to(device)
        with using(Compute(precision, device_type=torch.device(device).type)):
            fit(model, images[:256], labels[:256], Recipe(epochs=1, batch_size=128), device=device)  # warm-up
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            fit(model, images, labels, Recipe(epochs=1, batch_size=128), device=device)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
        rows.append((precision, time.perf_counter() - started))
    per_60k = {p: s * 60000 / n for p, s in rows}
    return ("| precision | s per 60,000-image epoch | × fp32 |\n|---|---|---|\n"
            + "\n".join(f"| {p} | {s:.1f} | {s / per_60k['fp32']:.2f} |" for p, s in per_60k.items())
            + f"\n\n{arch}, batch 128, {n:,} images timed (scaled to 60,000).")


STEPS = [("GPU-marked tests", step_tests, 60), ("Smoke suite", step_smoke, 60), ("Paper-scale slice", step_slice, 240),
         ("Table 4: inference time", step_timing, 60), ("Training epoch: fp32 vs bf16", step_epochs, 60)]
"""(title, step, seconds it needs at most on one GPU: a step is skipped when less time is left)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU at toy size")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gpu", help="folder of the report")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all steps (default 480)")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --dry-run for the CPU rehearsal", file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    name = "dry-run" if args.dry_run else re.sub(r"[^A-Za-z0-9._-]+", "-", torch.cuda.get_device_name(0)).strip("-")
    started, sections, failed = time.perf_counter(), [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for title, step, need in STEPS:
            left = args.budget - (time.perf_counter() - started)
            if not args.dry_run and left < need:
                sections.append(f"## {title}\n\nSkipped: {left:.0f} s left of {args.budget:.0f}, the step needs up to {need}.")
                continue
            began = time.perf_counter()
            try:
                body = step(args.dry_run, Path(tmp), device)
                status = "ok"
            except Exception as failure:  # recorded, never hidden: the report is the point
                body, status, failed = f"```\n{''.join(traceback.format_exception_only(failure)).strip()}\n```", "FAILED", failed + 1
                traceback.print_exc()
            sections.append(f"## {title} ({status}, {time.perf_counter() - began:.1f} s)\n\n{body}")
            print(f"gpu_check: {title}: {status} ({time.perf_counter() - began:.1f} s)", flush=True)
            write(args, name, started, failed, sections)  # after every step: a timeout keeps what finished
    print(f"gpu_check: wrote {args.out / f'{name}.md'}")
    return 1 if failed else 0


def write(args: argparse.Namespace, name: str, started: float, failed: int, sections: list[str]) -> None:
    device_line = ("CPU rehearsal at toy size (--dry-run): the numbers check the steps, not the hardware"
                   if args.dry_run else f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    report = (f"# GPU check: {name}\n\nDevice: {device_line}. msbench {msbench.__version__}; "
              f"{time.perf_counter() - started:.0f} s so far; {failed} step(s) failed; {len(sections)} of {len(STEPS)} "
              f"steps reported (a step missing here was cut off by the time limit).\n\n" + "\n\n".join(sections) + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text(report)


if __name__ == "__main__":
    sys.exit(main())
