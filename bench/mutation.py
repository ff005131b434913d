"""Mutation testing of the core (mutmut): how many mutants of headnode/placement/ the tests kill.

mutmut (pyproject.toml ``[tool.mutmut]``) changes one operator, constant or call at a time in
the placement package and runs the unit tests that reach the changed function; a mutant
the tests fail on is killed, one they pass on survived. The run happens in a copy of the
sources in .cache/mutation/src (mutmut writes its ``mutants/`` tree next to the config, and
the checkout must stay clean for everyone else), a fresh one each time unless ``--keep``.

Prints per module: mutants, killed, timeouts (a mutant that loops forever: detected too),
survived, without tests, those judged equivalent (bench/mutation_equivalent.txt: a mutant
no test can tell from the original, each with its reason), and the kill rate,
(killed + timeouts) / (mutants - equivalent); then every survivor not judged equivalent,
with its changed line. Exits 0 whatever the figures (they are figures, not a gate); 1 only
when mutmut itself could not run (its log's tail is printed).

    .venv/bin/python bench/mutation.py [--max-children 2] [--keep] [--last]
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
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
SRC = WORK / "src"
LOG = WORK / "run.log"
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


def mutmut_config() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        config: dict[str, object] = tomllib.load(f)["tool"]["mutmut"]
    return config


def prepare_copy(keep: bool) -> None:
    """The sources mutmut reads, copied with their times (mutmut compares them) into SRC."""
    if not keep and SRC.exists():
        shutil.rmtree(SRC)
    SRC.mkdir(parents=True, exist_ok=True)
    config = mutmut_config()
    wanted = [*config.get("source_paths", []), *config.get("also_copy", []),  # type: ignore[misc]
              "tests"]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "mutants")
    for name in dict.fromkeys(str(n) for n in wanted):
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, SRC / name, ignore=ignore, dirs_exist_ok=True)
        elif path.is_file():
            (SRC / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, SRC / name)
    shutil.copy2(ROOT / "pyproject.toml", SRC / "pyproject.toml")


def run_mutmut(max_children: int) -> int:
    command = [str(MUTMUT), "run", "--max-children", str(max_children)]
    with LOG.open("w") as log:
        proc = subprocess.Popen(command, cwd=SRC, stdout=log, stderr=subprocess.STDOUT)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # mutmut stops its workers on SIGINT (SIGTERM leaves them running)
            proc.send_signal(signal.SIGINT)
            proc.wait()
            raise


# -- results --------------------------------------------------------------------------------


def results() -> dict[str, dict[str, int | None]]:
    """Exit code per mutant, per module (``headnode.placement.fit``)."""
    by_module = {}
    for meta in sorted((SRC / "mutants").rglob("*.py.meta")):
        relative = meta.relative_to(SRC / "mutants").with_suffix("").with_suffix("")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            by_module[".".join(relative.parts)] = codes
    return by_module


def function_sources(module: str) -> dict[str, list[str]]:
    """Each function of the mutated module by name (mutants and originals), as lines."""
    path = SRC / "mutants" / (module.replace(".", "/") + ".py")
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


def tally(by_module: dict[str, dict[str, int | None]],
          equivalents: dict[str, Equivalent]) -> Report:
    report = Report({}, [], [])
    seen = set()
    for module, codes in by_module.items():
        counts = Tally()
        sources = function_sources(module)
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
    report.notes += [f"{name}: listed as equivalent, but there is no such mutant"
                     for name in equivalents if name not in seen
                     and not any(name in codes for codes in by_module.values())]
    return report


def print_report(report: Report, seconds: float, max_children: int) -> None:
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
              f"(mutmut show NAME in {SRC.relative_to(ROOT)} prints a diff):")
        for mutant, line in report.survivors:
            print(f"  {mutant}  {line}")
    for note in report.notes:
        print(f"note: {note}")


def row(name: str, counts: Tally, width: int) -> str:
    rate = counts.rate()
    shown = "-" if rate is None else f"{100 * rate:.1f} %"
    return (f"{name:<{width}} " + " ".join(f"{counts.counts[c]:>10}" for c in COLUMNS)
            + f"  {shown:>9}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-children", type=int, default=2,
                        help="mutants tested at once (default 2: the machine is shared)")
    parser.add_argument("--keep", action="store_true",
                        help="reuse the last run's copy and results (mutmut retests only "
                             "the functions that changed since)")
    parser.add_argument("--last", action="store_true",
                        help="print the last run's figures again (after editing "
                             "bench/mutation_equivalent.txt), without running")
    args = parser.parse_args()
    code, seconds = 0, 0.0
    if not args.last:
        print("mutation testing (mutmut) of headnode/placement/ ...", flush=True)
        prepare_copy(args.keep)
        started = time.monotonic()
        code = run_mutmut(args.max_children)
        seconds = time.monotonic() - started
    by_module = results()
    if code != 0 or not by_module:
        if args.last:
            print("no results of an earlier run in .cache/mutation", file=sys.stderr)
            return 1
        tail = LOG.read_text(errors="replace").replace("\r", "\n").splitlines()[-30:]
        print(f"mutmut run exited {code}; the end of {LOG.relative_to(ROOT)}:", *tail,
              sep="\n", file=sys.stderr)
        return 1
    print_report(tally(by_module, load_equivalents()), seconds, args.max_children)
    return 0


if __name__ == "__main__":
    sys.exit(main())
