"""Data-parallel training (gloo, 2 CPU processes) equals one process on the same global batch."""

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import distributed as dist

from cfx.models.text import HFTextEncoder
from cfx.models.training.distributed import ShardedSource, shard_rows
from tests.models.training import test_diffusion, test_gan
from tests.models.training.test_gan import source

STEPS = 3
BATCH = 4
ATOL = 1e-4  # on weights of order 0.01-1 (see test_two_processes_equal_one_on_the_whole_batch)


def _build(kind: str, encoder):
    if kind.startswith("gan"):
        return test_gan._trainer(encoder, batch_size=BATCH, discriminator_layers=1,
                                 adversarial_weight=0.0 if kind == "gan-l1" else 1.0)
    return test_diffusion._trainer(encoder, batch_size=BATCH)


def _train(kind: str, folder: str, rank: int | None):
    """``STEPS`` steps of a fresh trainer (as process ``rank`` of two, or alone with None);
    returns its training state and the reported losses."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    encoder = HFTextEncoder(folder, max_length=24)
    trainer = _build(kind, encoder)
    if rank is not None:
        trainer.distribute(rank, 2)
    losses = [trainer.train_step() for _ in range(STEPS)]
    return trainer.training_state(), losses


def _process(rank: int, kind: str, folder: str, store: str, out: str):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        (tensors, meta), losses = _train(kind, folder, rank)
        torch.save({"tensors": tensors, "meta": meta, "losses": losses}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_shard_rows_split_the_batch_evenly():
    assert [shard_rows(6, r, 3) for r in range(3)] == [slice(0, 2), slice(2, 4), slice(4, 6)]
    with pytest.raises(ValueError, match="batch_size must be a multiple of the number of "
                                         "processes, got 5 rows over 2"):
        shard_rows(5, 0, 2)
    with pytest.raises(ValueError, match="rank must be in"):
        shard_rows(4, 2, 2)


def test_a_sharded_source_keeps_its_rows_and_the_generator_in_step():
    whole = source(np.random.default_rng(7), 4)
    rng = np.random.default_rng(7)
    part = ShardedSource(source, slice(2, 4))(rng, 4)
    np.testing.assert_array_equal(part.ct, whole.ct[2:])
    np.testing.assert_array_equal(part.labels, whole.labels[2:])
    assert part.phrases == whole.phrases[2:]
    reference = np.random.default_rng(7)
    source(reference, 4)
    assert rng.bit_generator.state == reference.bit_generator.state


def _run_both(kind, folder, tmp_path):
    out = str(tmp_path / "state")
    mp.spawn(_process, args=(kind, folder, str(tmp_path / "store"), out), nprocs=2, join=True)
    single = _train(kind, folder, None)
    return [torch.load(f"{out}.{r}", weights_only=False) for r in range(2)], single


def _max_difference(saved: dict, single: dict, prefix: str) -> float:
    return max(float((saved[k] - v).abs().max()) for k, v in single.items()
               if k.startswith(prefix) and v.is_floating_point())


@pytest.mark.parametrize("kind", ["gan-l1", "diffusion"])
def test_two_processes_equal_one_on_the_whole_batch(kind, tiny_bert_folder, tmp_path):
    """Rank 0 and rank 1 end in the same state, equal to one process training on the global
    batch of 4 rows: random states exactly, weights, EMA and optimiser moments to ``ATOL``
    (float sums in another order; measured after 3 Adam steps at lr 1e-3: at most 2.0e-6 for
    the GAN's generator and 4.4e-7 for the diffusion model on one machine, 4.2e-5 for the GAN
    on another, on 5 of 1728 weights of one layer: Adam's first steps divide a gradient by its
    own size plus 1e-8, so a gradient near 1e-8 turns a last-bit difference into a visible one;
    a batch split wrongly moves weights by up to one step, 1e-3)."""
    ranks, ((single, single_meta), single_losses) = _run_both(kind, str(tiny_bert_folder),
                                                             tmp_path)
    for saved in ranks:
        assert saved["meta"]["step"] == STEPS
        assert saved["meta"]["rng"] == single_meta["rng"]
        assert torch.equal(saved["tensors"]["rng.noise"], single["rng.noise"])
        assert set(saved["tensors"]) == set(single)
        for key, value in single.items():
            if value.is_floating_point():
                np.testing.assert_allclose(saved["tensors"][key], value, rtol=0, atol=ATOL,
                                           err_msg=key)
        for mine, theirs in zip(saved["losses"], single_losses, strict=True):
            assert mine.keys() == theirs.keys()
            np.testing.assert_allclose([mine[k] for k in mine], [theirs[k] for k in mine],
                                       rtol=1e-5)
    # the weights moved: the comparison is not between initial states
    key = next(k for k in single if k.startswith(("generator.", "model.")) and "weight" in k)
    assert float((single[key] - _initial(kind, str(tiny_bert_folder))[key]).abs().max()) > 1e-4


def test_the_adversarial_gan_differs_only_through_the_discriminators_batch_norm(
        tiny_bert_folder, tmp_path):
    """MONAI's PatchDiscriminator normalises with BatchNorm, whose statistics each process
    takes over its own 2 rows (one process: over 4); on CUDA the trainer swaps in SyncBatchNorm,
    which gloo on CPU cannot run. So on CPU the processes agree exactly with each other, and with
    one process only to a stated tolerance (measured after 3 steps at lr 1e-3: generator 2.0e-3,
    its EMA 3.0e-5); the first step, before any update, gives the same L1 loss."""
    ranks, ((single, _), single_losses) = _run_both("gan", str(tiny_bert_folder), tmp_path)
    for prefix in ("generator.", "ema.", "optimizer_g.", "discriminator.initial_conv"):
        assert _max_difference(ranks[0]["tensors"], ranks[1]["tensors"], prefix) == 0.0
    assert _max_difference(ranks[0]["tensors"], single, "generator.") < 5e-3
    assert _max_difference(ranks[0]["tensors"], single, "ema.") < 1e-4
    assert ranks[0]["losses"][0]["l1"] == pytest.approx(single_losses[0]["l1"], rel=1e-6)


def _initial(kind: str, folder: str) -> dict:
    torch.manual_seed(0)
    tensors, _ = _build(kind, HFTextEncoder(folder, max_length=24)).training_state()
    return tensors
