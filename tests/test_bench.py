"""The benchmark plumbing: file naming, the Markdown summary of every result file, and one
end-to-end benchmark run at a tiny size."""

from __future__ import annotations

import json
import stat

import pytest
import torch

from repro.bench import save_result, write_summary


def test_results_are_named_by_machine_and_summarised_together(tmp_path):
    cpu = torch.device("cpu")
    a = save_result(tmp_path, "demo", cpu, {"device": "cpu", "ms": 2.5}, "-fp16")
    assert a.name == f"demo_cpu-{torch.get_num_threads()}threads-fp16.json"
    assert json.loads(a.read_text()) == {"device": "cpu", "ms": 2.5}
    assert stat.S_IMODE(a.stat().st_mode) == 0o644
    (tmp_path / "demo_cuda.json").write_text(json.dumps({"device": "gpu", "ms": 0.5}))
    (tmp_path / "other_cuda.json").write_text(json.dumps({"device": "x", "ms": 9}))
    md = write_summary(tmp_path, "demo", "Demo", "intro", ["device", "ms"],
                       lambda b: [[b["device"], f"{b['ms']:.1f}"]])
    assert md.read_text() == ("# Demo\n\nintro\n\n| device | ms |\n|---|---|\n"
                              "| cpu | 2.5 |\n| gpu | 0.5 |\n")


@pytest.mark.slow
def test_puad_benchmark_end_to_end(tmp_path):
    from repro import bench_puad

    bench_puad.main(["--device", "cpu", "--image-size", "64", "--repeats", "2",
                     "--out", str(tmp_path)])
    (result,) = tmp_path.glob("puad_latency_cpu-*threads.json")
    sizes = json.loads(result.read_text())["sizes"]
    assert set(sizes) == {"S", "M"} and all(v["puad"] > 0 for v in sizes.values())
    table = (tmp_path / "puad_latency.md").read_text().splitlines()
    assert len([r for r in table if r.startswith("| cpu")]) == 2
