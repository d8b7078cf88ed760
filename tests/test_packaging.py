"""What ms_vit imports at run time is declared, and the installed package imports without sys.path edits."""

import ast
import os
import subprocess
import sys
import tomllib

from conftest import ROOT

# Import name -> distribution name, where they differ.
DISTRIBUTION = {"cv2": "opencv-python-headless", "PIL": "pillow", "yaml": "pyyaml"}


def _third_party_imports(folder: str) -> set:
    found = set()
    for base, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(base, name)) as handle:
                    tree = ast.parse(handle.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        found.update(alias.name.split(".")[0] for alias in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "ms_vit"}


def test_every_runtime_import_is_a_declared_dependency():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        project = tomllib.load(handle)["project"]
    # Optional features (e.g. --tensorboard) import their package only when used, and say how to install it.
    optional = [dep for deps in project.get("optional-dependencies", {}).values() for dep in deps]
    declared = {dep.split("<")[0].split("=")[0].split(">")[0].strip().lower()
                for dep in project["dependencies"] + optional}
    imported = {DISTRIBUTION.get(m, m).lower() for m in _third_party_imports(os.path.join(ROOT, "ms_vit"))}
    assert "safetensors" in imported  # the checkpoint reader's
    assert imported <= declared, f"imported but not declared in pyproject.toml: {sorted(imported - declared)}"


def test_scripts_import_the_installed_package_from_any_folder(tmp_path):
    """No script or test edits sys.path: the package is installed (pip install -r requirements.txt: -e .)."""
    for folder in ("scripts", "bench", "tests"):
        for name in os.listdir(os.path.join(ROOT, folder)):
            if name.endswith(".py"):
                with open(os.path.join(ROOT, folder, name)) as handle:
                    assert "sys.path." + "insert" not in handle.read(), f"{folder}/{name} edits sys.path"
    proc = subprocess.run([sys.executable, "-c", "import ms_vit, sys; print(ms_vit.__file__)"], cwd=tmp_path,
                          capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == os.path.join(ROOT, "ms_vit", "__init__.py")


def test_git_tracks_no_file_a_run_generates():
    """MindSpore's kernel caches and logs, build output and data never enter the repository."""
    import re
    import shutil

    import pytest

    if shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    generated = re.compile(r"(^|/)(akg_kernel_meta|kernel_meta|rank_\d+|somas_meta|outputs|__pycache__|[^/]*\.egg-info)/"
                           r"|\.(so|o|ir|dot|log|key|pyc|ckpt|mindir|onnx)$")
    # tests/fixtures/ holds the tutorial network's tiny checkpoint and golden logits, committed on purpose
    assert [f for f in tracked if generated.search(f) and not f.startswith("tests/fixtures/")] == []


def test_one_version_number():
    """ms_vit.__version__ is pyproject.toml's: the package reads it from the installed metadata."""
    import ms_vit

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        assert ms_vit.__version__ == tomllib.load(handle)["project"]["version"]
