"""The README's examples are exercised, so the docs cannot drift from the code."""

import re

import pytest
import yaml

from tests.helpers import QUICKSTART, ROOT, raynas

README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_quickstart_yaml_is_the_quickstart_file():
    documented = [yaml.safe_load(b) for b in blocks("yaml") if b.lstrip().startswith("name: quickstart")]
    assert len(documented) == 1
    assert documented[0] == yaml.safe_load(QUICKSTART.read_text())


def test_readme_space_snippets_are_valid():
    from raynas.spaces import Space

    # The DSL fragment in the README, inside a space.
    fragment = next(b for b in blocks("yaml") if "repeat: {min: 1, max: 4}" in b and "stages:" in b)
    tree = yaml.safe_load("arch:\n" + fragment.split("  train:")[0] + "train:\n" + fragment.split("  train:")[1])
    space = Space(tree)
    config = space.sample(seed=1)
    assert 1 <= len(config["arch"]["stages"]) <= 4 and len(config["arch"]["layers"]) == 8
    python = next(b for b in blocks("python") if "from raynas import Space" in b)
    scope: dict = {}
    exec(python, scope)  # noqa: S102 - our own documentation
    assert set(scope["config"]) == {"arch", "train"}


def test_readme_validate_example_prints_what_it_says(ray_env):
    proc = raynas("validate", QUICKSTART, "--set", "search.searcher=grid", env=ray_env)
    assert proc.returncode == 2
    documented = re.search(r"# (experiments/quickstart.yaml: space: grid .*?)\n# (.*?)\n", README)
    expected = documented.group(1) + " " + documented.group(2)
    assert expected.replace("experiments/quickstart.yaml", str(QUICKSTART)) in proc.stderr


def test_readme_lists_every_searcher_scheduler_family_and_source():
    from raynas.search.registry import SCHEDULERS, SEARCHERS
    from raynas.trainables.data import source_names
    from raynas.trainables.registry import BUILTIN

    for name in list(SEARCHERS) + list(SCHEDULERS) + list(BUILTIN) + source_names():
        assert f"`{name}`" in README, name
    for strategy in list(SEARCHERS.values()) + list(SCHEDULERS.values()):
        for param in strategy.params:
            assert f"`{param}`" in README, (strategy.name, param)


@pytest.mark.ray
@pytest.mark.slow
def test_readme_python_api_example_runs(tmp_path):
    code = next(b for b in blocks("python") if "raynas.load_spec" in b)
    code = code.replace('"experiments/quickstart.yaml"', repr(str(QUICKSTART))).replace('"/tmp/results"', repr(str(tmp_path)))
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - our own documentation
    assert scope["best"].best > 0.9 and set(scope["best"].config) == {"arch", "train"}


def test_readme_grafana_command_finds_the_shipped_dashboard():
    """The README's `cp "$(python -c ...)" ...` line: the command in it prints the dashboard
    file of the installed package."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    line = next(b for b in blocks("bash") if "GRAFANA_DASHBOARD" in b)
    command = re.search(r'"\$\(python -c \'(.*?)\'\)"', line).group(1)
    path = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, check=True).stdout.strip()
    board = json.loads(Path(path).read_text())
    assert board["uid"] == "raynas-trials" and board["panels"]
