"""Bounded, seeded fuzz of the Python file loaders under a memory limit (issue 28); the C++
cascade reader's fuzz test is tests/cpp/hostile_input.cpp (CI, under AddressSanitizer)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FUZZ_CASES = 600   # per loader; five loaders


def test_mutated_files_give_named_one_line_errors_and_no_crash(tmp_path):
    """Each mutated cascade .npz, weights .pt and PNG / JPEG / BMP file either loads or gives a
    ValueError / OSError of one line, in a process limited to 3 GB of address space beyond its
    start (an allocation sized by a damaged header fails it)."""
    script = Path(__file__).parents[1] / "fuzz" / "loaders.py"
    limit = ("import resource, runpy, sys\n"
             "import torch, cv2\n"  # their own mappings first, then the limit
             "size = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmSize')) * 1024\n"
             "resource.setrlimit(resource.RLIMIT_AS, (size + (3 << 30), size + (3 << 30)))\n"
             f"sys.argv = [{str(script)!r}, {str(tmp_path)!r}, '{FUZZ_CASES}', '20261207']\n"
             f"runpy.run_path({str(script)!r}, run_name='__main__')\n")
    run = subprocess.run([sys.executable, "-c", limit], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert len(lines) == 5 and all(f"{FUZZ_CASES} cases" in line for line in lines), run.stdout
    print(run.stdout)
