"""What supernet tests share: digits as tensors and the fast engine's loop around a network; a
supernet of perturbed weights; the checks that a checkpoint resumes a supernet's sequence of
paths, that a path computes what the stand-alone network does, and that a path's training step
is the stand-alone network's."""

import copy
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


def perturbed(family: str, space: dict, shape: tuple, classes: int = 10, seed: int = 0):
    """A supernet whose weights (batch norm's and LayerNorm's ones and zeros too) are far from
    their initial values."""
    from raynas.trainables.supernet import build_supernet

    torch.manual_seed(seed)
    net = build_supernet(family, space, shape, classes)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return net


def assert_paths_are_the_stand_alone_networks(net, build, archs, x: torch.Tensor) -> None:
    """For each arch of ``archs``: ``net`` (a supernet) on that path, its batch norm recalibrated
    on ``x``, computes in eval mode what ``build(arch, input shape, 10)`` does with the weights
    ``path_state`` copies (strict: every weight of the stand-alone network comes from the
    path), and the path it reports builds the same network."""
    from raynas.trainables.supernet import path_state, recalibrate_bn

    shape = tuple(x.shape[1:])
    for arch in archs:
        net.set_arch(arch)
        recalibrate_bn(net, [x[:16], x[16:]])  # a no-op without batch norm
        sub = build(arch, shape, 10).eval()
        path_state(net, sub)
        torch.testing.assert_close(sub(x), net(x), rtol=1e-4, atol=1e-5)
        assert build(net.path(), shape, 10).state_dict().keys() == sub.state_dict().keys()


def assert_step_is_the_stand_alone_step(net, sub, shape: tuple) -> None:
    """``net`` (a supernet in training mode, its path set) and ``sub`` (the family's network of
    that path, in training mode) take one step on the same batch of 8 inputs of ``shape``: the
    same loss, and each weight's gradient is the slice of the supernet's gradient that
    ``path_state`` copies (the path must have no dropout)."""
    from raynas.trainables.supernet import path_state

    path_state(net, sub)
    x, y = torch.randn(8, *shape), torch.arange(8)
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    sub_loss = torch.nn.functional.cross_entropy(sub(x), y)
    sub_loss.backward()
    torch.testing.assert_close(loss, sub_loss)
    grads = copy.deepcopy(net)
    with torch.no_grad():
        for g, p in zip(grads.parameters(), net.parameters()):
            g.copy_(p.grad if p.grad is not None else torch.zeros_like(p))
    expected = grads.path_state_dict()
    for key, p in sub.named_parameters():
        torch.testing.assert_close(p.grad, expected[key], rtol=1e-4, atol=1e-6, msg=key)


def assert_paths_resume(family: str, space: dict, shape: tuple, *, seed: int = 4, distinct: int = 5,
                        build=None) -> list[dict]:
    """Checks a supernet's seeded path draws: in training mode each forward pass draws a new
    path (at least ``distinct`` different ones of the first 5); a supernet restored from a
    state dict taken after 5 draws draws the same next 3 as the original; another seed draws
    another sequence; eval mode runs the path set last. With ``build`` (the family's builder),
    every drawn path is an architecture the family builds and the supernet takes back as it is.
    Returns the first 5 paths."""
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
    if build is not None:
        for p in paths:
            build(p, shape, 10)
            net.set_arch(p)
            assert net.path() == p
    return paths


def assert_memory_estimate_traces_the_largest_path(family: str, space: dict, smaller: dict, shape: tuple) -> None:
    """The memory estimate of a one-shot search of ``space`` counts the supernet's parameters,
    and the activations of ``smaller`` (a space whose largest path is smaller) are fewer."""
    from raynas.spec import spec_from_dict
    from raynas.trainables.supernet import build_supernet
    from raynas.trainables.supernet_memory import estimate_supernet_bytes

    def estimate(arch):
        raw = {"name": family, "data": {"source": "digits"}, "model": family,
               "space": {"arch": arch, "train": {"batch_size": 16}}, "search": {"strategy": "one-shot"}}
        return estimate_supernet_bytes(spec_from_dict(raw), shape, 10)

    full = estimate(space)
    assert full["params"] == sum(p.numel() for p in build_supernet(family, space, shape, 10).parameters())
    assert estimate(smaller)["activation_bytes"] < full["activation_bytes"]


def assert_arch_steps_learn_and_resume(make, x: torch.Tensor, y: torch.Tensor) -> None:
    """A gradient search's supernet (``make()`` builds it, seeded): one architecture step per
    training forward pass, on the held-out ``x[:64]``, changes the logits and no weight (the
    network's optimizer never sees the logits); the logits, their Adam moments and the step
    count are in the state dict, so a supernet loaded from it takes the same next step.
    ``x`` holds at least 96 rows."""
    net = make()
    assert not any(name.startswith("alpha") for name, _ in net.named_parameters())
    weights = {k: v.clone() for k, v in net.named_parameters()}
    net.set_arch_data(x[:64], y[:64], batch_size=32)
    net.train()
    before = [a.clone() for a in net.alphas()]
    net(x[64:80])
    assert int(net.arch_steps) == 1 and any(not torch.equal(a, b) for a, b in zip(before, net.alphas()))
    assert all(torch.equal(v, weights[k]) for k, v in net.named_parameters())
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert {"alpha_0", "alpha_m_0", "alpha_v_0", "arch_steps"} <= set(state)
    net(x[80:96])
    again = make()
    again.load_state_dict(state)
    again.set_arch_data(x[:64], y[:64], batch_size=32)
    again.train()
    again(x[80:96])
    for a, b in zip(net.alphas(), again.alphas()):
        torch.testing.assert_close(a, b)
