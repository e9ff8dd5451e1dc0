"""Population based training across architectures.

Ray's PBT copies the better trial's checkpoint *and its config* into the worse trial, then
perturbs the keys it was told to mutate. raynas tells it only training hyperparameters
(``space.train``), never the architecture: a trial that exploits another therefore takes that
trial's architecture and weights together (the model is rebuilt from the copied ``arch``,
which is what the copied weights fit) and changes only how it trains. The trainable applies
the perturbed learning rate, weight decay and momentum on top of the copied optimizer state.

Only searched, unconditional, numeric training keys are perturbed: a conditional key may be
absent from a config, and switching the optimizer or schedule would not fit the copied state.
"""

from __future__ import annotations

from typing import Any

from raynas.errors import ConfigError
from raynas.spaces import Choice, Float, Int, Space
from raynas.spaces.domains import Dict, Node

__all__ = ["pbt_mutations", "build_pbt", "build_pb2"]


class _Resample:
    """PBT's resampling function for one domain (a picklable callable)."""

    def __init__(self, node: Node, seed: int):
        import random

        self.node, self.rng = node, random.Random(seed)

    def __call__(self) -> Any:
        return self.node.sample(self.rng)


class _KeepInSpace:
    """PBT's explore hook: perturbed values go back inside their domain's range and grid.

    Ray's PBT multiplies continuous values by 0.8 or 1.2 without bounds; a learning rate
    would drift out of the space after a few perturbations.
    """

    def __init__(self, domains: dict[str, Node]):
        self.domains = domains

    def __call__(self, config: dict) -> dict:
        train = config.get("train", {})
        for key, node in self.domains.items():
            if key not in train:
                continue
            value = train[key]
            if isinstance(node, Float):
                value = min(node.high, max(node.low, float(value)))
                if node.step is not None:
                    value = node.low + round((value - node.low) / node.step) * node.step
            elif isinstance(node, Int):
                value = min(node.high, max(node.low, int(round(value))))
                value = node.low + round((value - node.low) / node.step) * node.step
            elif isinstance(node, Choice):  # PB2 proposes any number in [min, max]: the nearest option
                value = min(node.constants(), key=lambda option: abs(option - value))
            train[key] = value
        return config


def _train_domains(space: Space) -> dict[str, Node]:
    root = space.root
    train = root.items.get("train") if isinstance(root, Dict) else None
    return dict(train.items) if isinstance(train, Dict) else {}


def _perturbable(node: Node) -> bool:
    if node.when or node.size() == 1:
        return False
    if isinstance(node, (Float, Int)):
        return True
    values = node.constants() if isinstance(node, Choice) else None
    return values is not None and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def pbt_mutations(space: Space, keys: list[str] | None = None, scheduler: str = "pbt") -> dict[str, Node]:
    """The ``space.train`` domains PBT perturbs (by key).

    Args:
        space: The experiment's space.
        keys: The keys to perturb (``scheduler.hyperparams``); default: every searched,
            unconditional, numeric one.
        scheduler: ``pbt`` or ``pb2``, for the messages.

    Raises:
        ConfigError: A named key cannot be perturbed, or there is nothing to perturb.
    """
    domains = _train_domains(space)
    if keys is None:
        chosen = {k: n for k, n in domains.items() if _perturbable(n)}
        if not chosen:
            raise ConfigError(
                "scheduler",
                f"{scheduler} perturbs training hyperparameters, but space.train searches none it can perturb "
                "(searched numeric keys without `when`, such as lr: {float: [1.0e-4, 1.0e-1], log: true})",
            )
        return chosen
    chosen = {}
    for i, key in enumerate(keys):
        where = f"scheduler.hyperparams.{i}"
        if key not in domains:
            from raynas.errors import did_you_mean

            raise ConfigError(where, f"space.train has no {key!r}{did_you_mean(key, domains)}")
        node = domains[key]
        if not _perturbable(node):
            why = (
                "it is conditional (absent from some configs)"
                if node.when
                else "it is fixed"
                if node.size() == 1
                else "only numbers can be perturbed (switching it would not fit the copied optimizer state)"
            )
            raise ConfigError(where, f"{scheduler} cannot perturb space.train.{key}: {why}")
        chosen[key] = node
    return chosen


def check_spec(spec) -> None:
    """PBT's and PB2's rules: one objective, a sampling searcher, the fast engine, checkpoints at
    every perturbation point, perturbable training hyperparameters, and a whole live population
    when synchronous."""
    search, scheduler, trainer, name = spec.search, spec.scheduler, spec.trainer, spec.scheduler.name
    if spec.objective.multi:
        raise ConfigError("scheduler.name", f"{name} ranks trials by one metric; use a single objective metric")
    if search.searcher not in ("random", "grid"):
        raise ConfigError(
            "search.searcher",
            f"{name} changes trials' hyperparameters as they train, which {search.searcher} cannot model; "
            f"use searcher random ({name} does the searching)",
        )
    if trainer.engine.value == "lightning" and spec.trainable is None:
        raise ConfigError(
            "trainer.engine",
            f"{name} needs the fast engine: Lightning's Trainer restores the optimizer's learning rate and "
            f"weight decay from the checkpoint, so the hyperparameters {name} perturbs would not apply; "
            "use trainer.engine: fast",
        )
    if trainer.checkpoint_every != 1 and scheduler.options["perturbation_interval"] % max(1, trainer.checkpoint_every):
        raise ConfigError(
            "trainer.checkpoint_every",
            f"{name} copies a trial's latest checkpoint every {scheduler.options['perturbation_interval']} epochs; "
            f"checkpoint_every={trainer.checkpoint_every} does not divide that",
        )
    if spec.trainable is None:
        pbt_mutations(spec.space, scheduler.options.get("hyperparams"), name)  # raises ConfigError
    if scheduler.synchronous_population and search.max_concurrent is not None and search.max_concurrent < spec.num_trials:
        # Synchronous PBT/PB2 compares the whole population at each perturbation point.
        raise ConfigError(
            "search.max_concurrent",
            f"synchronous {scheduler.name} perturbs only once every trial of the population has reached "
            f"the perturbation point, so all {spec.num_trials} trials must be live at once; "
            f"max_concurrent={search.max_concurrent} would compare trials that never ran together. "
            "Leave max_concurrent unset (CPUs still limit the running trials; the others wait, paused) "
            "or set synch: false",
        )


def build_pbt(spec):
    o = spec.scheduler.options
    domains = pbt_mutations(spec.space, o.get("hyperparams"))
    seed = spec.search.seed or 0
    mutations: dict[str, Any] = {}
    for i, (key, node) in enumerate(domains.items()):
        if isinstance(node, Choice):
            mutations[key] = sorted(node.constants())  # shifted left or right by PBT
        else:
            mutations[key] = _Resample(node, seed + i)
    from raynas.search.pbt_scheduler import RaynasPBT  # imports Ray Tune: only when building

    return RaynasPBT(
        time_attr="epoch",
        perturbation_interval=o["perturbation_interval"],
        burn_in_period=o["burn_in_period"],
        quantile_fraction=o["quantile_fraction"],
        resample_probability=o["resample_probability"],
        hyperparam_mutations={"train": mutations},
        custom_explore_fn=_KeepInSpace(domains),
        synch=o["synch"],
    )


def build_pb2(spec):
    """Ray's PB2 over the same keys as pbt: each within its domain's [low, high] (a numeric
    choice: its smallest and largest option), proposed by a GP bandit and put back on the
    domain's grid or nearest option."""
    o = spec.scheduler.options
    domains = pbt_mutations(spec.space, o.get("hyperparams"), "pb2")
    bounds = {}
    for key, node in domains.items():
        if isinstance(node, Choice):
            options = node.constants()
            bounds[key] = [min(options), max(options)]
        else:
            bounds[key] = [node.low, node.high]
    from raynas.search.pbt_scheduler import RaynasPB2  # imports Ray Tune: only when building

    return RaynasPB2(
        time_attr="epoch",
        perturbation_interval=o["perturbation_interval"],
        quantile_fraction=o["quantile_fraction"],
        hyperparam_bounds={"train": bounds},
        custom_explore_fn=_KeepInSpace(domains),
        synch=o["synch"],
    )
