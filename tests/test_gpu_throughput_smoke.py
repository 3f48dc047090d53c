"""benchmarks/gpu_throughput.py --smoke runs its JAX sections end to end on the CPU (code paths, not speed)."""
import json
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# the ViT section (and MFU) is left to the script's own --smoke run: it alone would double this test's time
JAX_SECTIONS = ("resnet", "pipeline", "frozen", "cached")


@pytest.mark.long  # the benchmark script end to end: about 20 s
def test_gpu_throughput_smoke_jax_sections(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_throughput.py", "--smoke", "--sections",
                           ",".join(JAX_SECTIONS), "--json", str(out), "--workdir", str(tmp_path / "work")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first = proc.stdout.splitlines()[0]
    res = json.loads(out.read_text())
    m = re.match(r"gpu_throughput: platform=(\w+) device_kind=.+ devices=(\d+) jax=\S+", first)
    assert m, first
    assert m.group(1) == res["env"]["platform"] != "unknown" and int(m.group(2)) == res["env"]["devices"] >= 1
    sections = res["sections"]
    assert list(sections) == list(JAX_SECTIONS), sections
    for name in JAX_SECTIONS:
        assert sections[name].get("images_per_s", 0) > 0, (name, sections[name], proc.stdout[-3000:])
    for name in ("resnet", "frozen", "cached"):
        assert sections[name]["compile_s"] > 0 and sections[name]["gflop_per_step"] > 0, sections[name]
    assert sections["frozen"]["frozen_depth"] == sections["frozen"]["units"] // 2 > 0
    assert sections["frozen"]["path"] == "input"
    assert sections["cached"]["path"] == f"cached@{sections['cached']['frozen_depth']}"
    assert sections["pipeline"]["end_to_end_over_on_device"] > 0
    assert res["ratios"]["end_to_end_over_on_device"] == sections["pipeline"]["end_to_end_over_on_device"]
    assert "end-to-end / on-device" in proc.stdout
