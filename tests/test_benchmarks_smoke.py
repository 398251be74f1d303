"""Every benchmark and example (the README's torchrun command included) runs end to end in its --quick mode (numbers are not checked here:
timings never go into tests; the scripts' own assertions and tables are exercised)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each script trains small models end to end

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "certify": ["benchmarks/certify.py", "--quick", "--no-write"],
    "certify_images": ["benchmarks/certify_images.py", "--quick", "--no-write", "--equal-steps", "2000"],
    "layer_families": ["benchmarks/layer_families.py", "--quick", "--no-write"],
    "monotonic_tabular": ["benchmarks/monotonic_tabular.py", "--quick", "--no-write"],
    "one_class": ["benchmarks/one_class.py", "--quick", "--no-write"],
    "tables_scale": ["benchmarks/tables_scale.py", "--quick"],
    "tables_real": ["benchmarks/tables_real.py", "--quick"],
    "wasserstein": ["benchmarks/wasserstein.py", "--quick", "--no-write"],
    "overhead": ["benchmarks/overhead.py", "--quick"],
    "privacy": ["benchmarks/privacy.py", "--quick"],
    "gpu_ready": ["benchmarks/gpu_ready.py", "--quick", "--device", "cpu"],
    "trigger": ["examples/trigger.py", "--quick", "--no-write", "--out", "{tmp}"],
    "trigger_export": ["benchmarks/trigger_export.py", "--quick", "--no-write"],
    "train_ddp": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "examples/train_ddp.py", "{tmp}"],
}


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_runs_in_quick_mode(name: str, tmp_path: Path) -> None:
    command = [sys.executable, *(part.format(tmp=tmp_path) for part in SCRIPTS[name])]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=environment)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "|" in result.stdout  # each prints a Markdown table
