"""The installed package is what `import raynas` finds, also next to a clone named raynas."""

import subprocess
import sys

from tests.helpers import ROOT


def test_import_from_the_parent_folder_of_a_clone_named_raynas(tmp_path):
    # Python puts the current folder first on sys.path, where the clone (no __init__.py at its
    # root) is a namespace package; the installed package must still win.
    (tmp_path / "raynas").symlink_to(ROOT, target_is_directory=True)
    for args in (["-c", "import raynas; print(raynas.load_spec.__module__)"], ["-m", "raynas", "--version"]):
        proc = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() in ("raynas.spec.loading", "raynas 0.1.0"), proc.stdout
