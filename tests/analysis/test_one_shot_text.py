"""What analyze and the report say of a gradient search's stages, per family (no Ray)."""

from types import SimpleNamespace

import pytest

from raynas.analysis.render import one_shot_text


@pytest.mark.parametrize("derived, says", [
    ({"edges": {"0-1": "skip"}, "stages": 2, "channels": 16}, "the cell was derived", ),
    ({"stages": [{"channels": 16, "layers": [{"expansion": 3}]}], "stem_channels": 16}, "the network was derived"),
])
def test_a_gradient_search_names_what_it_derived(derived, says):
    free = "edges chose skip" if "edges" in derived else "layers chose identity or skip"
    results = SimpleNamespace(metric="val_acc", one_shot={
        "strategy": "gradient", "epochs": 4, "supernet_s": 2.5, "folder": "/r/supernet", "derived": derived,
        "skip_edges": 3, "skip_edges_kept": 1})
    assert one_shot_text(results) == (f"gradient: {says} from the supernet's architecture weights after 4 epochs in "
                                      f"2.5 s (/r/supernet; 3 {free}, 1 kept), then trained as a trial")
