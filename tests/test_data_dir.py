"""resolve_data_dir: a --data_dir that is given and missing is one error naming it, never a download of the recipe's
dataset_url; downloading happens only when no folder was given (or the recipe names its download's own folder)."""

import os

import pytest
from test_scripts import script

from ms_vit import download
from ms_vit.cli import run
from ms_vit.config import make_train_config
from ms_vit.data.sources import resolve_data_dir
from ms_vit.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIAL = os.path.join(ROOT, "configs", "vit_b_16_finetune.yaml")


class Downloaded(Exception):
    """Raised by the fake fetch: a download was attempted."""


@pytest.fixture
def no_download(monkeypatch):
    """Every fetch fails the test's expectations loudly: the list holds what was asked for."""
    asked = []

    def fetch(source, dest_dir, sha256="", log=print, **kwargs):
        asked.append(source)
        raise Downloaded(source)

    monkeypatch.setattr(download, "fetch", fetch)
    return asked


def test_a_mistyped_data_dir_with_the_tutorials_recipe_is_one_line_and_downloads_nothing(tmp_path, no_download,
                                                                                        capsys):
    missing = str(tmp_path / "my_imagenett")
    code = run(script("train"), ["--config", TUTORIAL, "--data_dir", missing, "--device_target", "CPU"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and no_download == []
    assert err.startswith(f"error: data folder {missing} does not exist: correct --data_dir, or leave it out")
    assert "\n" not in err


def data_keys(**values):
    return make_train_config({"dataset_url": "https://example.org/data/flowers.tar.gz", **values}).section("data")


def test_without_a_data_dir_the_url_is_downloaded(no_download):
    with pytest.raises(Downloaded):
        resolve_data_dir(data_keys(), log=lambda *a: None)
    assert no_download == ["https://example.org/data/flowers.tar.gz"]


def test_a_data_dir_inside_the_downloads_own_folder_is_downloaded(no_download):
    """As configs/vit_cifar10_scratch.yaml does: data_dir names where its dataset_url unpacks."""
    with pytest.raises(Downloaded):
        resolve_data_dir(data_keys(data_dir="dataset/flowers/flowers-split"), log=lambda *a: None)
    assert len(no_download) == 1


def test_an_existing_empty_data_dir_is_reported_not_replaced_by_the_download(tmp_path, no_download):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="data folder .*empty is empty"):
        resolve_data_dir(data_keys(data_dir=str(tmp_path / "empty")), log=lambda *a: None)
    assert no_download == []


def test_demo_data_still_generates_a_missing_data_dir(tmp_path, monkeypatch, no_download):
    from ms_vit.data import demo

    made = []
    monkeypatch.setattr(demo, "make_shapes_dataset", lambda root: made.append(root) or root)
    root = str(tmp_path / "demo")
    assert resolve_data_dir(data_keys(demo_data=True, data_dir=root), log=lambda *a: None) == root
    assert made == [root] and no_download == []
