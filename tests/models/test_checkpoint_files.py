"""Reading checkpoint folders without torch: the architecture names match the networks, and the
sampling block names its sampler (DDIM for checkpoints written before samplers were named)."""

import json
import subprocess
import sys

from cfx.models.architectures import checkpoint_names
from cfx.models.checkpoint import network_class
from cfx.models.checkpoint_files import read_config, sampling_block
from cfx.models.nets.cond_diffusion3d import CondDiffusion3D
from cfx.models.nets.cond_gan3d import CondGAN3DGenerator


def test_architecture_names_name_their_networks():
    assert checkpoint_names() == ("cond_gan3d", "cond_diffusion3d")
    assert network_class("cond_gan3d") is CondGAN3DGenerator
    assert network_class("cond_diffusion3d") is CondDiffusion3D


def test_the_sampling_block_names_its_sampler():
    old = {"sampling": {"steps": 20, "guidance": 1.0, "eta": 0.0}}
    assert sampling_block(old) == {"sampler": "ddim", "steps": 20, "guidance": 1.0, "eta": 0.0}
    named = {"sampling": {"steps": 5, "guidance": 2.0, "sampler": "toy"}}
    assert sampling_block(named) == {"sampler": "toy", "steps": 5, "guidance": 2.0}
    assert sampling_block({"generator": {}}) is None  # a GAN


def test_reading_a_config_imports_no_torch(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps({"format": "cfx-checkpoint/1",
                                                      "architecture": "cond_gan3d"}))
    assert read_config(tmp_path)["architecture"] == "cond_gan3d"
    code = ("import sys; from cfx.models.checkpoint_files import read_config, content_hash; "
            f"read_config({str(tmp_path)!r}); content_hash({str(tmp_path)!r}); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
