"""hf-hub:ORG/NAME[@REVISION] weights: fetched once through huggingface_hub from a fake hub on 127.0.0.1, then reused.

Every test points HF_ENDPOINT at the fake hub and HF_HOME at tmp_path after huggingface_hub was imported, so these
also check that ms_vit reads the settings at call time. The fake hub records each request as (method, path).
"""

import hashlib
import json
import os
import socket
import sys
import types

import numpy as np
import pytest
from hub_server import serve_folder, serve_hub
from safetensors.numpy import save_file

from ms_vit.errors import ConfigError
from ms_vit.checkpoint.hub import HubWeights, is_hub_name, parse_hub_name, resolve_hub

NAME = "acme/tiny-vit"
CONFIG = {"architecture": "vit_tiny_test", "num_classes": 10}
PREPROCESSOR = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": {"height": 32, "width": 32}}


def model_files(tmp_path, config=CONFIG, preprocessor=True, weights="model.safetensors"):
    """A tiny model repo's files: ms_vit's hub code never parses the weights, any safetensors file will do."""
    weights_path = tmp_path / "weights.safetensors"
    rng = np.random.default_rng(len(json.dumps(config)))
    save_file({"head.weight": rng.standard_normal((10, 32)).astype(np.float32),
               "head.bias": np.zeros(10, np.float32)}, str(weights_path))
    files = {"config.json": json.dumps(config).encode(), weights: weights_path.read_bytes()}
    if preprocessor:
        files["preprocessor_config.json"] = json.dumps(PREPROCESSOR).encode()
    return files


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fake hub serving acme/tiny-vit, with HF_ENDPOINT at it and an empty cache under tmp_path."""
    import huggingface_hub.constants

    with serve_hub() as fake:
        fake.sha = fake.add_commit(NAME, model_files(tmp_path))
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            monkeypatch.delenv(var, raising=False)
        # huggingface_hub copied the environment into constants at import. Offline mode from a shell that exported
        # it must not leak in, and its telemetry (an agent registry fetched from the import-time endpoint, by
        # default huggingface.co) must not leave the machine.
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
        fake.cache = str(tmp_path / "hf" / "hub")
        yield fake


def resolve(value, logs=None):
    return resolve_hub(value, log=(logs if logs is not None else []).append)


def one_line(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def files_of(weights: HubWeights):
    return sorted(os.listdir(weights.path))


def test_first_run_downloads_the_three_files(hub):
    logs = []
    weights = resolve(f"hf-hub:{NAME}", logs)
    assert weights.name == NAME and weights.revision == hub.sha
    assert os.path.basename(weights.path) == hub.sha and weights.path.startswith(os.path.realpath(hub.cache))
    assert files_of(weights) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    for filename, content in hub.repos[NAME].commits[hub.sha].items():
        with open(os.path.join(weights.path, filename), "rb") as handle:
            assert handle.read() == content
    resolve_path = f"/{NAME}/resolve"
    weights_bytes = hub.repos[NAME].commits[hub.sha]["model.safetensors"]
    # config.json at the requested branch; the others pinned to the commit it resolved to; the weights from the CDN
    # the hub redirected to (an LFS file)
    assert hub.take_requests() == [
        ("HEAD", f"{resolve_path}/main/config.json"), ("GET", f"{resolve_path}/main/config.json"),
        ("HEAD", f"{resolve_path}/{hub.sha}/model.safetensors"),
        ("GET", f"/lfs/{hashlib.sha256(weights_bytes).hexdigest()}"),
        ("HEAD", f"{resolve_path}/{hub.sha}/preprocessor_config.json"),
        ("GET", f"{resolve_path}/{hub.sha}/preprocessor_config.json"),
    ]
    assert logs == [f"downloaded hf-hub:{NAME}@{hub.sha} into {hub.cache}"]


def test_second_run_downloads_nothing(hub):
    first = resolve(f"hf-hub:{NAME}")
    hub.take_requests()
    logs = []
    second = resolve(f"hf-hub:{NAME}", logs)
    assert second == first
    # only asks which commit main is at; the pinned files are found in the cache without a request
    assert hub.take_requests() == [("HEAD", f"/{NAME}/resolve/main/config.json")]
    assert logs == [f"using hf-hub:{NAME}@{hub.sha} from {hub.cache}"]


def test_offline_with_a_filled_cache_makes_no_request(hub, monkeypatch):
    first = resolve(f"hf-hub:{NAME}")
    hub.take_requests()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve(f"hf-hub:{NAME}") == first
    assert hub.take_requests() == []


def test_offline_with_an_empty_cache_is_one_line(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as excinfo:
        resolve(f"hf-hub:{NAME}")
    message = one_line(excinfo)
    assert f"hf-hub:{NAME}" in message and "HF_HUB_OFFLINE" in message and hub.cache in message
    assert hub.take_requests() == []


def test_a_wrong_name_is_one_line(hub):
    with pytest.raises(ConfigError) as excinfo:
        resolve("hf-hub:acme/tiny-vitt")
    message = one_line(excinfo)
    assert "hf-hub:acme/tiny-vitt" in message and "spelling" in message
    assert hub.take_requests() == [("HEAD", "/acme/tiny-vitt/resolve/main/config.json")]


def test_a_revision_is_honoured_and_recorded(hub, tmp_path):
    old = hub.sha
    new = hub.add_commit(NAME, model_files(tmp_path, config={**CONFIG, "num_classes": 5}))  # main moves on
    hub.repos[NAME].refs["v1"] = old
    hub.take_requests()
    at_tag = resolve(f"hf-hub:{NAME}@v1")
    assert at_tag.revision == old and os.path.basename(at_tag.path) == old
    assert ("HEAD", f"/{NAME}/resolve/v1/config.json") in hub.take_requests()
    with open(os.path.join(at_tag.path, "config.json")) as handle:
        assert json.load(handle) == CONFIG
    assert resolve(f"hf-hub:{NAME}").revision == new
    # a commit sha already in the cache needs no request at all
    hub.take_requests()
    assert resolve(f"hf-hub:{NAME}@{old}") == at_tag
    assert hub.take_requests() == []


def test_a_missing_revision_is_one_line(hub):
    with pytest.raises(ConfigError) as excinfo:
        resolve(f"hf-hub:{NAME}@no-such-branch")
    message = one_line(excinfo)
    assert f"hf-hub:{NAME}@no-such-branch" in message and "revision" in message


@pytest.mark.parametrize("value", [
    "hf-hub:", "hf-hub:tiny-vit", "hf-hub:/tiny-vit", "hf-hub:acme/", "hf-hub:acme/tiny vit", "hf-hub:acme/a/b",
    "hf-hub:acme/tiny--vit", "hf-hub:acme/-tiny", "hf-hub:acme/tiny-vit@", "hf-hub:acme/tiny-vit@a..b",
    "hf-hub:acme/tiny-vit@v1@v2", "timm/vit_base_patch16_224",
])
def test_malformed_names_are_one_line(hub, value):
    with pytest.raises(ConfigError) as excinfo:
        resolve(value)
    assert value in one_line(excinfo)
    assert hub.take_requests() == []


def test_names_parse():
    assert is_hub_name("hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k")
    assert not is_hub_name("vit_base_patch16_224") and not is_hub_name("https://huggingface.co/timm/x")
    assert parse_hub_name("hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k") == (
        "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", None)
    assert parse_hub_name("hf-hub:google/vit-base-patch16-224@refs/pr/3") == ("google/vit-base-patch16-224",
                                                                               "refs/pr/3")


def test_no_slash_points_at_timm_names():
    with pytest.raises(ConfigError, match="hf-hub:timm/"):
        parse_hub_name("hf-hub:vit_base_patch16_224")


def test_a_repo_without_safetensors_is_one_line(hub, tmp_path):
    hub.add_commit("acme/pickled", model_files(tmp_path, weights="pytorch_model.bin"))
    with pytest.raises(ConfigError) as excinfo:
        resolve("hf-hub:acme/pickled")
    message = one_line(excinfo)
    assert "hf-hub:acme/pickled" in message and "safetensors" in message and "pickle" in message
    assert not any(path.endswith(".bin") for _, path in hub.take_requests())  # never fetched


def test_the_preprocessor_config_is_optional_and_its_absence_remembered(hub, tmp_path, monkeypatch):
    sha = hub.add_commit("acme/bare", model_files(tmp_path, preprocessor=False))
    weights = resolve("hf-hub:acme/bare")
    assert weights.revision == sha and files_of(weights) == ["config.json", "model.safetensors"]
    hub.take_requests()
    assert resolve("hf-hub:acme/bare") == weights
    assert hub.take_requests() == [("HEAD", "/acme/bare/resolve/main/config.json")]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve("hf-hub:acme/bare") == weights


def test_hf_hub_cache_wins_over_hf_home(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    logs = []
    weights = resolve(f"hf-hub:{NAME}", logs)
    assert weights.path.startswith(os.path.realpath(tmp_path / "elsewhere"))
    assert logs[0].endswith(f"into {tmp_path / 'elsewhere'}")


def test_an_unreachable_endpoint_is_one_line(hub, monkeypatch):
    import huggingface_hub.utils._http as hub_http

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", dead)
    # huggingface_hub retries a refused connection 5 times with 1-8 s pauses (23 s): skip the pauses
    monkeypatch.setattr(hub_http, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    with pytest.raises(ConfigError) as excinfo:
        resolve(f"hf-hub:{NAME}")
    message = one_line(excinfo)
    assert dead in message and f"hf-hub:{NAME}" in message and "HF_ENDPOINT" in message
    assert "HF_HUB_OFFLINE=1" in message


def test_an_endpoint_that_is_no_hub_is_one_line(hub, monkeypatch, tmp_path):
    with serve_folder(tmp_path) as url:  # a plain web server: 404 without the hub's X-Error-Code
        monkeypatch.setenv("HF_ENDPOINT", url)
        with pytest.raises(ConfigError) as excinfo:
            resolve(f"hf-hub:{NAME}")
    message = one_line(excinfo)
    assert url in message and "HTTP 404" in message and "HF_ENDPOINT" in message


def test_missing_huggingface_hub_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes `import huggingface_hub` fail
    with pytest.raises(ConfigError) as excinfo:
        resolve(f"hf-hub:{NAME}")
    assert one_line(excinfo) == (f"hub name hf-hub:{NAME} needs the huggingface_hub package: "
                                 "pip install huggingface_hub")


def test_a_hub_name_fine_tunes_and_the_checkpoint_records_name_and_revision(hub, tmp_path):
    """hf-hub:ORG/NAME as --pretrained: fetched into the shared cache, built from its config.json, and recorded in
    best.ckpt's metadata with the commit it came from; the second run takes it from the cache."""
    from conftest import make_image_folder
    from test_dinov2 import hf_model, save_folder

    from ms_vit import read_checkpoint
    from ms_vit.config import make_train_config
    from ms_vit.train.run import fine_tune

    folder = save_folder(hf_model(), tmp_path / "dinov2-tiny")
    files = {name: open(os.path.join(folder, name), "rb").read() for name in os.listdir(folder)}
    sha = hub.add_commit("acme/dinov2-tiny", files)
    data = make_image_folder(tmp_path / "data", n_train=2, n_val=1, size=32)
    run = {"data_dir": data, "pretrained": "hf-hub:acme/dinov2-tiny", "image_size": 28, "batch_size": 3, "epochs": 1,
           "num_workers": 1, "compile_cache": False, "output_dir": str(tmp_path / "out")}
    logs = []
    fine_tune(make_train_config(run), log=logs.append)
    meta = read_checkpoint(str(tmp_path / "out" / "best.ckpt")).meta
    assert (meta["hub_name"], meta["hub_revision"]) == ("acme/dinov2-tiny", sha)
    assert meta["model_name"] == "hf-hub:acme/dinov2-tiny" and meta["interpolation"] == "bicubic"
    assert any(line.startswith("downloaded hf-hub:acme/dinov2-tiny") for line in logs)
    hub.take_requests()
    net = __import__("ms_vit").from_pretrained("hf-hub:acme/dinov2-tiny")
    assert net.config.layer_scale and not [r for r in hub.take_requests() if r[0] == "GET"]
