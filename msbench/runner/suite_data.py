"""A suite's data, checked before any work: every split it reads, as it is on disk first, so every
missing dataset is named in one error, and a data root that does not exist is never created."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from msbench.config import SuiteError
from msbench.data import DataError, MissingDataError, load_split
from msbench.data.builtin import downloads_allowed
from msbench.data.builtin import offline as no_downloads
from msbench.defenses.chain import resolve_chain
from msbench.defenses.detection import DetectionDefense
from msbench.registry import ATTACKS, DEFENSES

if TYPE_CHECKING:
    from msbench.runner.suite_schema import Suite


def check_data(suite: Suite, root: Path) -> None:
    """Load every split the suite will read, so missing files fail before any training: first as they
    are on disk, then (where downloads are allowed and the data root exists) downloading what is
    missing; whatever is still missing is one error listing every dataset, its splits and what needs it."""
    needed: list[tuple[str, str, str]] = []
    for dataset in suite.matrix.datasets:
        needed += [(dataset, "train", f"matrix.datasets ({dataset})"),
                   (dataset, "test", f"matrix.datasets ({dataset})")]
        roles_used = set()
        for composition in suite.matrix.defenses:
            for name in resolve_chain(composition):
                roles_used.update(DEFENSES.get(name).roles)
        for attack in suite.matrix.attacks:
            roles_used.update(ATTACKS.get(attack).roles)
        for role in sorted(roles_used):
            other = suite.role(dataset, role)
            if other is None:
                raise SuiteError(str(suite.path), f"datasets.{dataset}.{role}",
                                 "this suite's plugins need this role dataset; none is set")
            needed.append((other, "train", f"datasets.{dataset}.{role}"))
    missing = _look(suite, root, needed, offline=True)  # every split as it is on disk: nothing fetched or created
    if missing and downloads_allowed() and root.is_dir():
        missing = _look(suite, root, [(name, split, key) for name, split, key, _ in missing], offline=False)
    if missing:
        names = {}
        for name, split, key, why in missing:
            entry = names.setdefault(name, {"splits": [], "keys": [], "why": why})
            entry["splits"] += [split] if split not in entry["splits"] else []
            entry["keys"] += [key] if key not in entry["keys"] else []
        where = f"{root} (no such folder: nothing was downloaded or created)" if not root.is_dir() else str(root)
        listing = "; ".join(f"{name} {' and '.join(e['splits'])} (for {', '.join(e['keys'])}: {e['why']})"
                            for name, e in names.items())
        raise SuiteError(str(suite.path), "data",
                         f"{len(names)} dataset{'s' if len(names) > 1 else ''} missing under {where}: "
                                                  f"{listing}")
    _check_benign_streams(suite, root)


def _check_benign_streams(suite: Suite, root: Path) -> None:
    """A detection defense's benign accounts each query distinct test images: a stream longer than
    the (subset) test split is a suite error, said before any work rather than when the cell runs."""
    names = {name for composition in suite.matrix.defenses for name in resolve_chain(composition)
             if issubclass(DEFENSES.get(name), DetectionDefense)}
    for name in sorted(names):
        queries = suite.defenses[name].config.benign_queries
        for dataset in suite.matrix.datasets:
            full = len(load_split(suite.spec(dataset), root, "test"))
            size = min(full, suite.subset(dataset, "test") or full)
            if queries > size:
                raise SuiteError(str(suite.path), f"defenses.{name}.benign_queries",
                                 f"{queries} queries per benign user is longer than {dataset}'s test split ({size} "
                                 f"images)")


def _look(suite: Suite, root: Path, needed: list[tuple[str, str, str]],
          offline: bool) -> list[tuple[str, str, str, str]]:
    """Load each needed split (with downloads off when ``offline``); the missing ones as (name, split, key, why).
    A file that exists but is unusable is an error at once, naming the file."""
    missing = []
    for name, split, key in dict.fromkeys(needed):
        try:
            with (no_downloads() if offline else nullcontext()):
                load_split(suite.spec(name), root, split)
        except MissingDataError as absent:
            missing.append((name, split, key, str(absent)))
        except DataError as bad:  # name the data file first, then where the suite asks for it
            raise DataError(bad.file, bad.key,
                            f"{bad.message} ({name} {split} split, read for {key} of {suite.path})") from None
        except OSError as failure:
            raise SuiteError(str(suite.path), key,
                             f"{name}: cannot read {failure.filename or 'its files'} ({failure.strerror})") from None
    return missing
