"""Run every benchmark in this folder (``make bench``), one after the other, each in its own process.

Each benchmark prints its own table of times, ratios against the peers it measures in the same run
(SimpleITK, scipy, a naive pydicom read, a numpy memory-bandwidth floor, elastix) and peak memory. The exit
status is non-zero when one of them fails or reports a bound it does not meet.

Usage::

    .venv/bin/python Testing/benchmarks/run_all.py           # full size (several minutes)
    .venv/bin/python Testing/benchmarks/run_all.py --quick   # smaller inputs
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

#: Benchmark script -> the option that makes it run on smaller inputs.
BENCHMARKS = {"bench_dicom_load.py": ["--slices", "100"], "bench_resample.py": ["--small"],
              "bench_scale.py": ["--quick"], "bench_batch.py": ["--quick"], "bench_end_to_end.py": ["--quick"],
              "bench_register.py": ["--cases", "1"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="run each benchmark on smaller inputs")
    quick = parser.parse_args().quick
    failed = []
    for script, quick_options in BENCHMARKS.items():
        print(f"\n== {script}", flush=True)
        command = [sys.executable, str(Path(__file__).with_name(script))] + (quick_options if quick else [])
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(script)
    print(f"\n{len(BENCHMARKS) - len(failed)} of {len(BENCHMARKS)} benchmarks ran within their bounds"
          + (f"; not: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
