"""``benchmarks/memory.py --quick``: one child process per case, each reporting a peak RSS at
least its RSS after loading, a positive time per volume, and the windows of its model grid."""

import importlib.util
from pathlib import Path

_SCRIPT = Path(__file__).parents[2] / "benchmarks" / "memory.py"


def test_quick_gan_case(capsys):
    spec = importlib.util.spec_from_file_location("memory_benchmark", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--quick", "--models", "gan"])
    assert [(r["size"], r["model"]) for r in rows] == [("quick", "phantom-gan-64")]
    row = rows[0]
    assert row["peak_rss_mb"] >= row["loaded_rss_mb"] > 100  # torch and the model are loaded
    assert row["seconds_per_volume"] > 0 and row["forward_seconds_per_volume"] > 0
    # 32 x 32 x 16 voxels of 11.2 x 11.2 x 20 mm on the model's 5 mm grid: 72 x 72 x 64, two
    # 64-voxel windows (step 32) across each of x and y, one along z
    assert row["model_grid"] == [72, 72, 64] and row["windows_per_volume"] == 4
    assert "phantom-gan-64" in capsys.readouterr().out
