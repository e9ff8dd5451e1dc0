"""Every searcher that works on a plain space suggests architectures of the cell and transformer
examples' spaces that build: driven directly (no Ray), as tests/search drives them."""

from __future__ import annotations

import math

import pytest

from raynas.experiment import ORIGIN_KEY
from raynas.search.evolution import EvolutionSearcher
from raynas.search.rl import RLSearcher
from raynas.search.searchers import GridSearcher, OptunaSearcher, RandomSearcher
from raynas.spaces import Space
from raynas.spec.loading import load_spec
from raynas.trainables.families import build_model, count_params
from tests.helpers import EXPERIMENTS

# The input each example's data source hands the model: 8x8 digits, the 13 wine measurements.
EXAMPLES = {"cell_digits": ((1, 8, 8), 10), "transformer_digits": ((1, 8, 8), 10), "transformer_wine": ((13,), 3)}
SEARCHERS = {
    "random": lambda space: RandomSearcher(space, "score", "max", seed=0),
    "grid": lambda space: GridSearcher(space, "score", "max"),
    "optuna": lambda space: OptunaSearcher(space, "score", "max", seed=0, n_startup_trials=4),
    "evolution": lambda space: EvolutionSearcher(space, "score", "max", seed=0, population_size=4, sample_size=2),
    "rl": lambda space: RLSearcher(space, "score", "max", seed=0),
}


@pytest.mark.parametrize("searcher", list(SEARCHERS))
@pytest.mark.parametrize("example", list(EXAMPLES))
def test_every_suggested_architecture_builds(example, searcher):
    spec = load_spec(EXPERIMENTS / f"{example}.yaml")
    assert spec.model in ("cell", "transformer")
    space = Space({"arch": spec.space.to_dict()["arch"]})
    assert math.isfinite(space.size())  # so grid applies too
    input_shape, num_classes = EXAMPLES[example]
    s = SEARCHERS[searcher](space)
    built = []
    for i in range(10):
        config = s.suggest(f"t{i}")
        config = {k: v for k, v in config.items() if k != ORIGIN_KEY}
        assert space.contains(config)
        model = build_model(spec.model, config["arch"], input_shape, num_classes)
        # A score that differs between architectures, so the learning searchers learn something.
        score = math.log(count_params(model))
        s.on_trial_result(f"t{i}", {"score": score, "epoch": 1})
        s.on_trial_complete(f"t{i}", {"score": score, "epoch": 1})
        built.append(config["arch"])
    assert len({repr(a) for a in built}) >= 5, built  # the searchers explore the space
    if searcher == "evolution":
        assert s.num_mutations > 0  # children of tournament winners were built too


def test_a_budget_is_checked_against_the_cheapest_architectures_of_both_families():
    """The budget check builds the space's smallest corner. A larger transformer patch is
    cheaper (fewer tokens), so every patch size is tried; a cell's cheapest edge is `none`,
    wherever it stands in the choice list."""
    from raynas.trainables.budget import smallest_architectures
    from raynas.trainables.families import count_flops

    vit = load_spec(EXPERIMENTS / "transformer_digits.yaml").space
    corners = smallest_architectures(vit)
    assert {a["patch_size"] for a in corners} == {2, 4}
    flops = {a["patch_size"]: count_flops(build_model("transformer", a, (1, 8, 8), 10), (1, 8, 8))
             for a in corners}
    assert flops[4] < flops[2]
    cell = Space({"arch": {"edges": {e: {"choice": ["conv3x3", "skip", "none"]} for e in
                                     ("0-1", "0-2", "1-2", "0-3", "1-3", "2-3")}}})
    assert smallest_architectures(cell) == [{"edges": {e: "none" for e in ("0-1", "0-2", "1-2", "0-3", "1-3", "2-3")}}]
