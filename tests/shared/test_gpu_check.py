import json

import tensorflow as tf

from shared import gpu_check


def test_without_a_gpu_it_says_so_and_exits_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--output", str(out)]) == 0
    assert "no GPU" in capsys.readouterr().out
    assert json.loads(out.read_text())["gpu"] is None


def test_one_measurement_reads_throughput_from_history():
    result = gpu_check.measure("fraud", mixed=False, xla=False, allow_cpu=True)
    assert result["device"] == "CPU" and result["peak_gpu_memory_mb"] is None
    assert set(result["examples_per_s"]) == {"network", "autoencoder"}
    assert all(rate > 0 for rate in result["examples_per_s"].values())
    assert all(ms > 0 for ms in result["step_ms"].values())
