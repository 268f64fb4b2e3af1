"""The ``msbench`` command: a thin layer over the Python API (each command is one call)."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from msbench.config import InputError


def _plan(args: argparse.Namespace) -> int:
    from msbench.runner.plan import plan_suite
    from msbench.runner.suite import load_suite

    plan = plan_suite(load_suite(args.suite), out=args.out, device=args.device, retry_failed=args.retry_failed,
                      force=args.force)
    print("\n".join(plan.lines()), flush=True)
    return 0


def _check_plugin(args: argparse.Namespace) -> int:
    """The contract tests (tests/test_contracts.py of this checkout) on the plugins one file registers."""
    import os
    import subprocess

    import msbench.runner.suite  # noqa: F401  (the built-in plugins, so only the file's are new)
    from msbench.plugin_modules import import_plugin_file
    from msbench.registry import ATTACKS, DEFENSES

    before = set(DEFENSES.names()) | set(ATTACKS.names())
    try:
        import_plugin_file(args.file)
    except Exception as failure:  # a plugin may fail to import in any way: one line
        print(f"msbench: {args.file}: cannot import ({type(failure).__name__}: {failure})", file=sys.stderr)
        return 2
    names = sorted((set(DEFENSES.names()) | set(ATTACKS.names())) - before)
    tests = Path(__file__).resolve().parents[1] / "tests" / "test_contracts.py"
    if not names:
        print(f"msbench: {args.file}: registers no defense or attack", file=sys.stderr)
        return 2
    if not tests.exists():
        print("msbench: check-plugin needs a checkout of msbench with its tests/ (tests/test_contracts.py)",
              file=sys.stderr)
        return 2
    print(f"checking {', '.join(names)} against the plugin contract", flush=True)
    env = {**os.environ, "MSBENCH_CHECK_PLUGIN": str(Path(args.file).resolve())}
    selection = " or ".join(names)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests), "-k", selection],
                          cwd=tests.parents[1], env=env).returncode


def _run(args: argparse.Namespace) -> int:
    from msbench.executors import check_jobs, make_executor
    from msbench.runner.run import run_suite, summary

    if args.dry_run:
        return _plan(args)

    ray_options = {"address": args.ray_address, "cpus_per_task": args.cpus_per_task,
                   "gpus_per_task": args.gpus_per_task}
    try:
        if args.jobs is not None:
            check_jobs(args.jobs, "--jobs")  # refused in the flag's own name, before any work
            if args.executor == "ray":
                raise ValueError("--jobs: worker processes on this machine; "
                                 "on Ray, --cpus-per-task sets a task's share")
        executor = make_executor(args.executor, jobs=args.jobs, **(ray_options if args.executor == "ray" else {}))
    except (ValueError, ImportError) as bad:
        print(f"msbench: {bad}", file=sys.stderr)
        return 2
    frame = run_suite(args.suite, data_root=args.data_root, out=args.out, device=args.device,
                      retry_failed=args.retry_failed, report=not args.no_report, executor=executor, force=args.force,
                      share_run_dir=args.share_run_dir)
    print(summary(frame), flush=True)
    failed = frame.attrs["cells"]["failed"]
    if failed:  # the run went on past them, but its results are incomplete: say so to scripts too
        print(f"msbench: {failed} of {frame.attrs['cells']['planned']} cells failed (summary above); "
              f"msbench run {args.suite} --retry-failed runs them again", file=sys.stderr)
        return 1
    return 0


def _time(args: argparse.Namespace) -> int:
    from msbench.io import RunLock
    from msbench.runner.suite import load_suite
    from msbench.runner.suite import SuiteError
    from msbench.timing.stage import NO_TIMING, time_suite

    from msbench.runner.workspace import check_device, requested_device

    suite = load_suite(args.suite)
    if "timing" not in suite.raw:  # refused before the run directory is made or locked
        raise SuiteError(str(suite.path), "", NO_TIMING)
    check_device(*requested_device(args.device, suite))  # so is a device this machine lacks
    with RunLock(args.out or Path("runs") / suite.name):  # timing writes victims and timing.csv into the run dir
        time_suite(suite, data_root=args.data_root, out=args.out, device=args.device)
    return 0


def _report(args: argparse.Namespace) -> int:
    from msbench.report import render_report

    try:
        out = render_report(args.run_dirs, out=args.out, formats=args.format)
    except (ValueError, FileNotFoundError) as bad:
        print(f"msbench: {bad}", file=sys.stderr)
        return 2
    print(f"report: {out / 'index.html' if 'html' in args.format else out}")
    return 0


def _list(args: argparse.Namespace) -> int:
    import msbench.runner.suite  # noqa: F401  (registers the built-in plugins)
    from msbench.defenses import OutputDefense
    from msbench.registry import ARCHITECTURES, ATTACKS, DATASETS, DEFENSES, describe

    for title, registry in (("defenses", DEFENSES), ("attacks", ATTACKS), ("datasets", DATASETS),
                            ("architectures", ARCHITECTURES)):
        print(f"{title}:")
        for name in registry.names():
            plugin = registry.get(name)
            kind = (" [output]" if issubclass(plugin, OutputDefense) else " [training]") if title == "defenses" else ""
            print(f"  {name:<16}{kind:<11} {describe(plugin)}")
    return 0


class _Version(argparse.Action):
    """``--version``: asks git for the commit only when the flag is given."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version (and git commit) and exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from msbench.provenance import version_line

        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per API call (run, time, report, list)."""
    from msbench.executors import EXECUTORS

    parser = argparse.ArgumentParser(prog="msbench",
                                     description="Benchmark model-stealing defenses against model-stealing attacks.")
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a suite (skips cells already done)",
                              description="Run every cell of a suite and write runs/<suite>/results.csv.")
    run.add_argument("suite", type=Path, help="suite TOML file, e.g. suites/smoke.toml")
    run.add_argument("--data-root", type=Path, default=None,
                     help="dataset folder (default: $MSBENCH_DATA, else ~/.cache/msbench/data)")
    run.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<suite name>)")
    run.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the suite's run.device)")
    run.add_argument("--retry-failed", action="store_true", help="run again the cells recorded as failed")
    run.add_argument("--force", action="store_true",
                     help="recompute every cell and retrain every victim, even those done")
    run.add_argument("--no-report", action="store_true", help="do not render reports/<run folder name> at the end")
    run.add_argument("--dry-run", action="store_true", help="print the plan (msbench plan) and run nothing")
    run.add_argument("--share-run-dir", action="store_true",
                     help="run into a run directory that holds another suite's run, reusing its cells "
                          "(zoo on quick's); that run's tables are kept in OUT/suites/<its name>/")
    run.add_argument("--executor", choices=EXECUTORS.names(), default="local",
                     help="local: this process (default); pool: worker processes on this machine (--jobs); "
                          "ray: victims and cells as tasks on a Ray cluster")
    run.add_argument("--jobs", type=int, default=None, metavar="N",
                     help="worker processes on this machine, at most its CPU cores, each on cores/N torch threads "
                          "(default 1: this process)")
    run.add_argument("--ray-address", default=None,
                     help="Ray cluster to join (default: $RAY_ADDRESS, else a local one)")
    run.add_argument("--cpus-per-task", type=int, default=1, help="ray: CPUs (and torch threads) per task (default: 1)")
    run.add_argument("--gpus-per-task", type=float, default=None,
                     help="ray: GPUs per task (default: 1 where the cluster has GPUs)")
    run.set_defaults(handler=_run)

    planning = commands.add_parser("plan", help="what a run would do and cost, without running it",
                                   description="Cells cached and to run, victims to train, and an estimated time "
                                               "(measured where the run directory has records, "
                                               "else a stated cost model).")
    planning.add_argument("suite", type=Path, help="suite TOML file, e.g. suites/full.toml")
    planning.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<suite name>)")
    planning.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the suite's run.device)")
    planning.add_argument("--retry-failed", action="store_true", help="count the failed cells as to run")
    planning.add_argument("--force", action="store_true", help="count every cell and victim as to run")
    planning.set_defaults(handler=_plan)

    timing = commands.add_parser("time", help="time each defense's deployed API (inference cost)",
                                 description="Time what a suite's [timing] section names and write "
                                             "runs/<suite>/timing.csv; a suite without a [timing] section is refused "
                                             "(docs/performance.md).")
    timing.add_argument("suite", type=Path, help="suite TOML file with a [timing] section, e.g. suites/quick.toml")
    timing.add_argument("--data-root", type=Path, default=None,
                        help="dataset folder (default: $MSBENCH_DATA, else ~/.cache/msbench/data)")
    timing.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<suite name>)")
    timing.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the suite's run.device)")
    timing.set_defaults(handler=_time)

    report = commands.add_parser("report", help="render the report of one or more runs",
                                 description="Render LaTeX tables, an HTML page and figures from run tables; "
                                             "several run directories are combined into one report.")
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="run directory, e.g. runs/smoke")
    report.add_argument("--out", type=Path, default=None, help="report folder (default: reports/<suite name>)")
    report.add_argument("--format", default="html,latex,png,pdf",
                        help="comma-separated: html, latex, png, pdf (default: all)")
    report.set_defaults(handler=_report)

    checking = commands.add_parser("check-plugin", help="run the plugin contract tests on a plugin file",
                                   description="Import FILE and run tests/test_contracts.py on the defenses and "
                                               "attacks it registers.")
    checking.add_argument("file", type=Path, help="a plugin file, e.g. suites/my_defense.py")
    checking.set_defaults(handler=_check_plugin)

    listing = commands.add_parser("list", help="list registered plugins",
                                  description="List registered defenses, attacks, datasets and architectures.")
    listing.set_defaults(handler=_list)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's stop, ``kill``): handled like Ctrl-C, so the run says what it kept."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    from msbench.logs import console

    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    try:
        with console():  # the run's log records, line by line on stdout
            return args.handler(args)
    except InputError as bad:  # a bad suite, data file or run directory: one line per problem, nothing started
        for line in str(bad).splitlines():
            print(f"msbench: {line}", file=sys.stderr)
        return 2
    except OSError as failure:  # a disk error msbench did not name itself: still one line
        where = failure.filename or "msbench"
        print(f"msbench: {where}: {failure.strerror or failure}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated (SIGTERM); finished cells are kept, the same command continues", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
