"""Robustness of the readers and the map file loader: the property-based fuzz tests at
length, and how many malformed inputs each target was given.

    .venv/bin/python benchmarks/fuzz_robustness.py [--examples 300] [--log FILE]

Runs, in one pytest process with ``ACEG_FUZZ_EXAMPLES=N``:

* tests/test_fuzz.py::test_readers_fuzz_only_acegerror: every reader, a file's bytes or
  number tokens mutated (truncated, garbage, NaN, huge, unparsable, a corrupt image ...);
* tests/test_fuzz_readers.py: every reader, a file's lines edited (dropped, repeated,
  empty lines stripped, other line endings, spacing, a byte-order mark, comments), the
  JSON nesting of transforms.json (up to 300,000 deep), and random valid COLMAP models read
  by aceg and by pycolmap (text and binary);
* tests/test_fuzz_maps.py: anchor, transformer and ACE maps with flipped bytes,
  truncations, metadata edits (hash kept, hash recomputed, older unhashed maps) and tensor
  edits.

Then prints, per target, the inputs tried and their outcomes: refused (a one-line
AcegError; for maps ``aceg localize`` exits 2 with that line), identical (read as the
unedited file), valid (read as exactly what the edited file says); anything else (a
traceback, a multi-line error, a wrong reading) is a failure. Hypothesis tries fewer
inputs than N where a target has fewer distinct ones (the line edits of a small file).
The pytest exit code is returned.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_fuzz.py::test_readers_fuzz_only_acegerror", "tests/test_fuzz_readers.py",
         "tests/test_fuzz_maps.py"]
GOOD = ("refused", "identical", "valid")
#: Targets whose inputs are valid files (read by aceg and by pycolmap, compared).
VALID_INPUTS = ("COLMAP text vs pycolmap", "COLMAP binary vs pycolmap")


def run(examples: int) -> tuple[int, dict[str, dict[str, int]], str]:
    """Run the fuzz tests with ``examples`` inputs each: exit code, counts, pytest's tail."""
    with tempfile.TemporaryDirectory() as tmp:
        counts = Path(tmp) / "counts.json"
        env = {**os.environ, "ACEG_FUZZ_EXAMPLES": str(examples),
               "ACEG_FUZZ_COUNT_FILE": str(counts), "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "-W", "ignore::hypothesis.errors.HypothesisWarning", *TESTS],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        data = json.loads(counts.read_text()) if counts.is_file() else {}
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    return proc.returncode, data, tail


def table(counts: dict[str, dict[str, int]]) -> list[str]:
    """One row per target: inputs, refused, identical, valid, failures; then the totals."""
    rows = [f"{'target':52s} {'inputs':>7s} {'refused':>8s} {'identical':>10s} {'valid':>6s} "
            f"{'failures':>9s}"]
    total = {k: 0 for k in ("inputs", *GOOD, "failures")}
    for target in sorted(counts):
        c = counts[target]
        row = {"inputs": sum(c.values()), **{k: c.get(k, 0) for k in GOOD},
               "failures": sum(n for k, n in c.items() if k not in GOOD)}
        total = {k: total[k] + row[k] for k in total}
        rows.append(f"{target:52s} {row['inputs']:7d} {row['refused']:8d} {row['identical']:10d} "
                    f"{row['valid']:6d} {row['failures']:9d}")
    rows.append(f"{'total':52s} {total['inputs']:7d} {total['refused']:8d} {total['identical']:10d} "
                f"{total['valid']:6d} {total['failures']:9d}")
    compared = sum(sum(c.values()) for t, c in counts.items() if t in VALID_INPUTS)
    rows.append(f"malformed or edited inputs (all but the {compared} valid COLMAP models read "
                f"against pycolmap): {total['inputs'] - compared}, failures {total['failures']}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=300,
                        help="hypothesis examples per fuzz test (default 300)")
    parser.add_argument("--log", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    code, counts, tail = run(args.examples)
    lines = [f"fuzz_robustness: ACEG_FUZZ_EXAMPLES={args.examples}; pytest: {tail}", "",
             *table(counts)]
    report = "\n".join(lines) + "\n"
    print(report, end="")
    if args.log:
        args.log.write_text(report)
    return code


if __name__ == "__main__":
    sys.exit(main())
