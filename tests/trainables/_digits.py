"""What supernet tests share: digits as tensors and the fast engine's loop around a network, and
the check that a checkpoint resumes a supernet's sequence of paths."""

import json

import torch


def digits_loop(net, lr: float, epochs: int):
    """``(loop, x_train)``: a FastLoop training ``net`` on digits (batch 64, seeded), validating
    on its validation split."""
    from raynas.trainables.data import load_dataset
    from raynas.trainables.hparams import TrainParams
    from raynas.trainables.module import FastLoop, FastModule, TensorBatches

    data = load_dataset("digits", val_fraction=0.2, seed=0)
    x, y = torch.as_tensor(data.x_train, dtype=torch.float32), torch.as_tensor(data.y_train, dtype=torch.long)
    xv, yv = torch.as_tensor(data.x_val, dtype=torch.float32), torch.as_tensor(data.y_val, dtype=torch.long)
    hp = TrainParams.from_config({"lr": lr, "batch_size": 64})
    batches = TensorBatches(x, y, 64, shuffle=True, generator=torch.Generator().manual_seed(0))
    loop = FastLoop(FastModule(net, hp, max_epochs=epochs, steps_per_epoch=len(batches)), batches,
                    TensorBatches(xv, yv, 1024, shuffle=False), torch.device("cpu"))
    return loop, x


def assert_paths_resume(family: str, space: dict, shape: tuple, *, seed: int = 4, distinct: int = 5) -> list[dict]:
    """Checks a supernet's seeded path draws: in training mode each forward pass draws a new
    path (at least ``distinct`` different ones of the first 5); a supernet restored from a
    state dict taken after 5 draws draws the same next 3 as the original; another seed draws
    another sequence; eval mode runs the path set last. Returns the first 5 paths."""
    from raynas.trainables.supernet import build_supernet

    def fresh(s: int):
        net = build_supernet(family, space, shape, 10)
        net.sampler, net.seed = net.draw_uniform, s
        return net.train()

    net, x = fresh(seed), torch.randn(4, *shape)
    paths = []
    for _ in range(5):
        net(x)
        paths.append(net.path())
    assert len({json.dumps(p, sort_keys=True) for p in paths}) >= distinct and int(net.draws) == 5
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    after = []
    for _ in range(3):
        net(x)
        after.append(net.path())
    restored = fresh(seed)
    restored.load_state_dict(saved)  # a checkpoint holds the position in the sequence
    again = []
    for _ in range(3):
        restored(x)
        again.append(restored.path())
    assert again == after
    assert [fresh(seed + 1).draw_uniform() for _ in range(5)] != paths  # another seed, another sequence
    net.eval()
    before = net.path()
    net(x)
    assert net.path() == before  # eval runs the path set last
    return paths
