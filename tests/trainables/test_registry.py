"""Family names: built-in, installed plugins (entry points), registered in-process."""

import subprocess
import sys
import textwrap

import pytest

from raynas.trainables import registry
from raynas.trainables.registry import UnknownFamilyError, family_names, get_family, resolve_family


def test_builtins_resolve_to_references_without_importing_torch():
    code = (
        "import sys; from raynas.trainables.registry import resolve_family, family_names;"
        "assert resolve_family('cnn') == 'raynas.trainables.families:build_cnn';"
        "assert {'mlp','cnn','resnet','mbconv'} <= set(family_names());"
        "assert 'torch' not in sys.modules, 'the registry must stay light'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_name_lists_known_and_suggests():
    with pytest.raises(UnknownFamilyError) as err:
        resolve_family("resnte")
    assert "did you mean 'resnet'" in str(err.value) and "mbconv" in str(err.value)


def test_registered_family_resolves_to_the_function_itself():
    def tiny(arch, input_shape, num_classes):
        raise NotImplementedError

    try:
        registry.register_family("tiny_reg", tiny)
        # The driver hands workers the function (pickled), not a name they cannot look up.
        assert resolve_family("tiny_reg") is tiny
        assert get_family("tiny_reg") is tiny
    finally:
        registry._REGISTERED.pop("tiny_reg", None)


def test_installed_plugin_family_via_entry_point(tmp_path, monkeypatch):
    (tmp_path / "plugin_models.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        def wide(arch, input_shape, num_classes):
            return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
    """))
    dist = tmp_path / "plugin_models-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-models\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[raynas.families]\nwide = plugin_models:wide\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "wide" in family_names()
    assert resolve_family("wide") == "plugin_models:wide"
    assert get_family("wide").__name__ == "wide"
