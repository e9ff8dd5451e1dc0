"""Data-parallel training (raynas.trainables.parallel): each worker's share of a batch, and the
gradient averaging that makes the workers' step the step of one trainer on the whole batch,
checked in a real two-process gloo group (Ray Train's backend on CPUs)."""


import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from raynas.trainables.module import TensorBatches
from raynas.trainables.parallel import ShardedBatches, sync_gradients


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3), nn.Linear(3, 3))


def _data():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(7, 5, generator=generator), torch.randint(0, 3, (7,), generator=generator)


def _loss(net, x, y):
    return nn.functional.cross_entropy(net(x), y)


def _synced_gradients(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        net = _net()
        x, y = _data()
        shard = ShardedBatches(TensorBatches(x, y, 7, shuffle=False), rank, world)
        (part_x, part_y), = list(shard)
        _loss(net, part_x, part_y).backward()
        net[3].weight.grad = None  # a path this batch did not run: left out on every worker
        sync_gradients(net, shard.fraction)
        torch.save({name: p.grad for name, p in net.named_parameters()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_workers_averaged_gradients_are_the_whole_batch_gradient(tmp_path):
    # 7 rows split 4 and 3: the shares weigh each worker's mean-loss gradient.
    init, out = f"file://{tmp_path / 'rendezvous'}", str(tmp_path / "grads")
    mp.spawn(_synced_gradients, args=(2, init, out), nprocs=2, join=True)
    net = _net()
    x, y = _data()
    _loss(net, x, y).backward()
    expected = {name: p.grad for name, p in net.named_parameters()}
    for rank in (0, 1):
        got = torch.load(f"{out}.{rank}")
        assert got["3.weight"] is None
        for name in ("0.weight", "0.bias", "2.weight", "2.bias"):
            torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6)
    # Without the weights by share (a plain mean of the two) the result is not that gradient.
    halves = [_loss(net, x[:4], y[:4]), _loss(net, x[4:], y[4:])]
    plain = torch.autograd.grad((halves[0] + halves[1]) / 2, net[0].weight)[0]
    assert not torch.allclose(plain, expected["0.weight"], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("rows, batch, world", [(10, 4, 2), (11, 4, 2), (9, 6, 3), (64, 16, 4)])
def test_the_workers_shares_together_are_the_batches_of_one_trainer(rows, batch, world):
    x, y = torch.arange(float(rows)).unsqueeze(1), torch.zeros(rows, dtype=torch.long)

    def one_trainer():
        generator = torch.Generator().manual_seed(3)
        return [b[0].flatten().tolist() for b in TensorBatches(x, y, batch, shuffle=True, generator=generator)]

    shares = []
    for rank in range(world):
        sharded = ShardedBatches(TensorBatches(x, y, batch, shuffle=True, generator=torch.Generator().manual_seed(3)),
                                 rank, world)
        shares.append([b[0].flatten().tolist() for b in sharded])
        assert len(shares[-1]) == len(sharded), "len() must count what iteration yields (the LR schedule uses it)"
        assert sharded.rows == sum(map(len, shares[-1]))
    whole = [b for b in one_trainer() if len(b) >= 2 * world]  # a short last batch is left out
    assert [sum((shares[r][i] for r in range(world)), []) for i in range(len(whole))] == whole
    assert all(len(part) >= 2 for share in shares for part in share)  # batch norm needs two


def test_the_cluster_must_hold_every_worker_and_the_driver(shared_ray):
    from raynas.errors import ConfigError
    from raynas.runner import _check_resources
    from raynas.spec import spec_from_dict

    raw = {"name": "dp", "model": "cell", "data": {"source": "digits"},
           "space": {"arch": {"edges": {"0-1": {"choice": ["skip", "conv3x3"]}}, "nodes": 2, "stages": 1}},
           "search": {"strategy": "one-shot"}, "resources": {"cpus_per_trial": 1, "workers_per_trial": 2}}
    with pytest.raises(ConfigError) as err:
        _check_resources(spec_from_dict(raw))  # 2 CPUs: two workers of 1 and the driver's 0.01 do not fit
    assert err.value.path == "resources.workers_per_trial"
    assert "need 2.01 CPUs and 0 GPUs; the Ray cluster has 2 and 0" in str(err.value)
    raw["resources"]["cpus_per_trial"] = 0.5
    assert _check_resources(spec_from_dict(raw)) == 1  # one data-parallel trial at a time


