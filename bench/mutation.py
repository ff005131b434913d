"""Mutation testing of the core (mutmut): how many mutants of each target the tests kill.

mutmut changes one operator, constant or call at a time in a target's sources and runs the
unit tests that reach the changed function; a mutant the tests fail on is killed, one they
pass on survived. Two targets: ``placement`` (headnode/placement/, pyproject.toml's
``[tool.mutmut]`` as it is) and ``capacity`` (headnode/services/capacity.py, the
reservation ledger: that table with :data:`CAPACITY` over it). Each runs in its own copy of
the sources, .cache/mutation/<target>/src (mutmut writes its ``mutants/`` tree next to the
config, and the checkout must stay clean for everyone else), a fresh one each time unless
``--keep``.

Prints per module: mutants, killed, timeouts (a mutant that loops forever: detected too),
survived, without tests, those judged equivalent (bench/mutation_equivalent.txt: a mutant
no test can tell from the original, each with its reason), and the kill rate,
(killed + timeouts) / (mutants - equivalent); then every survivor not judged equivalent,
with its changed line. Exits 0 whatever the figures (they are figures, not a gate); 1 only
when mutmut itself could not run (its log's tail is printed).

    .venv/bin/python bench/mutation.py [--target placement|capacity|all] [--max-children 2]
                                       [--keep] [--last]
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".cache" / "mutation"
EQUIVALENT_FILE = ROOT / "bench" / "mutation_equivalent.txt"
MUTMUT = Path(sys.executable).parent / "mutmut"

# mutmut's exit codes per mutant (mutmut.stats.status_by_exit_code), folded into our columns:
# a timeout and mutmut's "segfault" (its SIGKILL once the CPU limit is past) are loops the
# tests caught; anything not listed (interrupted, suspicious) is "other".
KILLED_CODES = {1, 3, 37}
TIMEOUT_CODES = {36, 24, -24, 152, 255, -9, -11}
SURVIVED_CODES = {0}
NO_TESTS_CODES = {5, 33}
COLUMNS = ("mutants", "killed", "timeouts", "survived", "no tests", "equivalent", "other")

#: The capacity target's settings over pyproject's ``[tool.mutmut]``. Its tests run on
#: PostgreSQL and Redis, which each mutant's pytest session starts (a few seconds, outside
#: the tests' measured time): hence the 30 s constant in the time limit (with the default,
#: every mutant "timed out"), and no bench.mutation_pure. A mutant that loops is still
#: stopped after 3x (its tests' time + 30 s) of CPU, half of that in wall-clock time.
#: bench.mutation_uncached: the guarded UPDATE is built on every call (see there why).
CAPACITY: dict[str, object] = {
    "source_paths": ["headnode/services/capacity.py"],
    "pytest_add_cli_args": ["-p", "bench.mutation_uncached", "--hypothesis-seed=0"],
    "pytest_add_cli_args_test_selection": [
        "tests/unit/headnode/services/test_capacity.py",
        "tests/unit/headnode/services/test_capacity_edges.py",
        "tests/unit/headnode/services/test_maintenance_guard.py",
        # resize through its service and the engine: reserve_growth, commit_resize,
        # release_growth as the workflow calls them
        "tests/unit/workflows/test_new_workflows.py::test_resize_up_holds_growth_then_commits_it",
        "tests/unit/workflows/test_new_workflows.py::test_resize_down_frees_room",
        "tests/unit/workflows/test_new_workflows.py::test_failed_resize_gives_the_growth_back",
        "tests/unit/workflows/test_new_workflows.py::"
        "test_resize_that_does_not_fit_is_refused_and_writes_nothing",
    ],
    "timeout_constant": 30.0,
    "timeout_multiplier": 1.5,
}
TARGETS: dict[str, dict[str, object]] = {"placement": {}, "capacity": CAPACITY}


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)

    def rate(self) -> float | None:
        judged = self.counts["mutants"] - self.counts["equivalent"]
        if judged <= 0:
            return None
        return (self.counts["killed"] + self.counts["timeouts"]) / judged


@dataclass(frozen=True)
class Equivalent:
    name: str
    line: str
    reason: str


# -- the work copy --------------------------------------------------------------------------


def source_dir(target: str) -> Path:
    return WORK / target / "src"


def mutmut_config(target: str) -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        config: dict[str, object] = tomllib.load(f)["tool"]["mutmut"]
    return {**config, **TARGETS[target]}


def mutmut_table(config: dict[str, object]) -> str:
    """``[tool.mutmut]`` as TOML: JSON's strings, numbers and lists of them are TOML too."""
    return "[tool.mutmut]\n" + "".join(f"{key} = {json.dumps(value)}\n"
                                       for key, value in config.items()) + "\n"


def write_pyproject(target: str, path: Path) -> None:
    """pyproject.toml with the target's ``[tool.mutmut]`` table in place of the checkout's."""
    text = (ROOT / "pyproject.toml").read_text()
    table = re.compile(r"^\[tool\.mutmut\]\n.*?(?=^\[)", re.MULTILINE | re.DOTALL)
    path.write_text(table.sub(lambda _: mutmut_table(mutmut_config(target)), text, count=1))


def prepare_copy(target: str, keep: bool) -> None:
    """The sources mutmut reads, copied with their times (mutmut compares them) into the
    target's source dir."""
    src = source_dir(target)
    if not keep and src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True, exist_ok=True)
    config = mutmut_config(target)
    wanted = [*config.get("source_paths", []), *config.get("also_copy", []),  # type: ignore[misc]
              "tests"]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "mutants")
    for name in dict.fromkeys(str(n) for n in wanted):
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore, dirs_exist_ok=True)
        elif path.is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
    write_pyproject(target, src / "pyproject.toml")


def run_mutmut(target: str, max_children: int) -> int:
    command = [str(MUTMUT), "run", "--max-children", str(max_children)]
    with log_path(target).open("w") as log:
        proc = subprocess.Popen(command, cwd=source_dir(target), stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # mutmut stops its workers on SIGINT (SIGTERM leaves them running)
            proc.send_signal(signal.SIGINT)
            proc.wait()
            raise


def log_path(target: str) -> Path:
    return WORK / target / "run.log"


# -- results --------------------------------------------------------------------------------


def results(src: Path) -> dict[str, dict[str, int | None]]:
    """Exit code per mutant, per module (``headnode.placement.fit``)."""
    by_module = {}
    for meta in sorted((src / "mutants").rglob("*.py.meta")):
        relative = meta.relative_to(src / "mutants").with_suffix("").with_suffix("")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            by_module[".".join(relative.parts)] = codes
    return by_module


def function_sources(src: Path, module: str) -> dict[str, list[str]]:
    """Each function of the mutated module by name (mutants and originals), as lines."""
    path = src / "mutants" / (module.replace(".", "/") + ".py")
    text = path.read_text()
    sources = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            segment = ast.get_source_segment(text, node) or ""
            sources[node.name] = [line.strip() for line in segment.splitlines()[1:]]
    return sources


def changed_line(mutant: str, sources: dict[str, list[str]]) -> str:
    """The mutant's line as mutmut changed it (its function's first line unlike the
    original's), to show a survivor and to keep an equivalence judgement tied to it."""
    function = mutant.rpartition(".")[2]
    original = sources.get(function.rpartition("__mutmut_")[0] + "__mutmut_orig", [])
    changed = sources.get(function, [])
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=original, b=changed).get_opcodes():
        if tag != "equal":
            return " / ".join(changed[j1:j2]) or "removed: " + " / ".join(original[i1:i2])
    return "(no change found)"


def load_equivalents() -> dict[str, Equivalent]:
    """bench/mutation_equivalent.txt: ``mutant | changed line | why no test can see it``."""
    found: dict[str, Equivalent] = {}
    if not EQUIVALENT_FILE.exists():
        return found
    for raw in EQUIVALENT_FILE.read_text().splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        name, line, reason = (part.strip() for part in raw.split("|", 2))
        found[name] = Equivalent(name, line, reason)
    return found


def column(code: int | None) -> str:
    if code in KILLED_CODES:
        return "killed"
    if code in TIMEOUT_CODES:
        return "timeouts"
    if code in SURVIVED_CODES:
        return "survived"
    if code in NO_TESTS_CODES:
        return "no tests"
    return "other"


@dataclass
class Report:
    tallies: dict[str, Tally]
    survivors: list[tuple[str, str]]  # (mutant, its changed line), not judged equivalent
    notes: list[str]  # equivalence entries that no longer apply


def tally(src: Path, by_module: dict[str, dict[str, int | None]],
          equivalents: dict[str, Equivalent]) -> Report:
    report = Report({}, [], [])
    seen = set()
    for module, codes in by_module.items():
        counts = Tally()
        sources = function_sources(src, module)
        for mutant, code in sorted(codes.items()):
            counts.counts["mutants"] += 1
            kind = column(code)
            if kind in ("survived", "no tests"):
                line = changed_line(mutant, sources)
                judged = equivalents.get(mutant)
                if judged is not None and judged.line == line:
                    kind = "equivalent"
                    seen.add(mutant)
                else:
                    if judged is not None:
                        report.notes.append(f"{mutant}: listed as equivalent for "
                                            f"{judged.line!r}, but it now changes {line!r}")
                    report.survivors.append((mutant, line))
            elif mutant in equivalents:
                report.notes.append(f"{mutant}: listed as equivalent, but the tests kill it")
                seen.add(mutant)
            counts.counts[kind] += 1
        report.tallies[module] = counts
    # another target's entries are that target's to judge
    report.notes += [f"{name}: listed as equivalent, but there is no such mutant"
                     for name in equivalents if name not in seen
                     and any(name.startswith(module + ".") for module in by_module)
                     and not any(name in codes for codes in by_module.values())]
    return report


def print_report(src: Path, report: Report, seconds: float, max_children: int) -> None:
    width = max([len(m) for m in report.tallies] + [len("total")])
    print(f"{'module':<{width}} " + " ".join(f"{c:>10}" for c in COLUMNS) + "  kill rate")
    total = Tally()
    for module, counts in report.tallies.items():
        total.counts.update(counts.counts)
        print(row(module, counts, width))
    print(row("total", total, width))
    took = f"{seconds:.0f} s with {max_children} workers" if seconds else "the last run"
    print(f"(kill rate: killed + timeouts over mutants less the equivalent ones; {took})")
    if report.survivors:
        print(f"\n{len(report.survivors)} survivors not judged equivalent "
              f"(mutmut show NAME in {src.relative_to(ROOT)} prints a diff):")
        for mutant, line in report.survivors:
            print(f"  {mutant}  {line}")
    for note in report.notes:
        print(f"note: {note}")


def row(name: str, counts: Tally, width: int) -> str:
    rate = counts.rate()
    shown = "-" if rate is None else f"{100 * rate:.1f} %"
    return (f"{name:<{width}} " + " ".join(f"{counts.counts[c]:>10}" for c in COLUMNS)
            + f"  {shown:>9}")


def run_target(target: str, args: argparse.Namespace) -> int:
    """One target's run (or its last results) and report; 1 if mutmut could not run."""
    src = source_dir(target)
    code, seconds = 0, 0.0
    if not args.last:
        paths = ", ".join(str(p) for p in mutmut_config(target)["source_paths"])  # type: ignore[attr-defined]
        print(f"mutation testing (mutmut) of {paths} ...", flush=True)
        prepare_copy(target, args.keep)
        started = time.monotonic()
        code = run_mutmut(target, args.max_children)
        seconds = time.monotonic() - started
    by_module = results(src) if (src / "mutants").exists() else {}
    if code != 0 or not by_module:
        if args.last:
            print(f"no results of an earlier {target} run in {src.relative_to(ROOT)}",
                  file=sys.stderr)
            return 1
        log = log_path(target)
        tail = log.read_text(errors="replace").replace("\r", "\n").splitlines()[-30:]
        print(f"mutmut run exited {code}; the end of {log.relative_to(ROOT)}:", *tail,
              sep="\n", file=sys.stderr)
        return 1
    print_report(src, tally(src, by_module, load_equivalents()), seconds, args.max_children)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=[*TARGETS, "all"], default="all",
                        help="what to mutate (default all: placement, then capacity)")
    parser.add_argument("--max-children", type=int, default=2,
                        help="mutants tested at once (default 2: the machine is shared)")
    parser.add_argument("--keep", action="store_true",
                        help="reuse the last run's copy and results (mutmut retests only "
                             "the functions that changed since)")
    parser.add_argument("--last", action="store_true",
                        help="print the last run's figures again (after editing "
                             "bench/mutation_equivalent.txt), without running")
    args = parser.parse_args()
    targets = list(TARGETS) if args.target == "all" else [args.target]
    codes = []
    for n, target in enumerate(targets):
        if n:
            print()
        codes.append(run_target(target, args))
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
