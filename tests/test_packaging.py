"""The package layout the design asks for: jaxkn.kernels/convert/experiments come from top-level folders, and
the main job is importable from a source checkout whichever way jaxkn was installed."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_maps_the_top_level_folders_under_jaxkn():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = setuptools["package-dir"]
    for sub in ("kernels", "convert", "experiments"):
        assert mapping[f"jaxkn.{sub}"] == sub
        assert f"jaxkn.{sub}" in setuptools["packages"]
    assert not any(name in ("kernels", "convert") for name in setuptools["packages"])  # no bare top level


def test_main_job_imports_from_the_checkout_root_without_an_editable_finder():
    """What `pip install .` then `python -m jaxkn.experiments.two_hop` in the repo root sees: ./jaxkn shadows the
    installed package, so jaxkn itself must find experiments/, kernels/ and convert/ beside it."""
    code = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
        f"sys.path.insert(0, {str(ROOT)!r}); "
        "import jaxkn.experiments.two_hop, jaxkn.kernels.dispatch, jaxkn.convert.gguf; "
        "print(jaxkn.experiments.two_hop.__file__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert Path(out.stdout.strip()) == ROOT / "experiments" / "two_hop.py"
