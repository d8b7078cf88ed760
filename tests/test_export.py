import mindspore as ms
import numpy as np
from conftest import TINY, logits_of
from mindspore import nn
from test_scripts import script

import ms_vit
from ms_vit.cli import run


def test_mindir_export_gives_the_same_logits(tmp_path, images, capsys):
    net = ms_vit.create_model(TINY)
    ckpt = ms_vit.save_checkpoint(net, tmp_path / "m.ckpt", meta={"model": net.config.to_dict()})
    out = tmp_path / "m.mindir"
    assert run(script("export"), ["--ckpt", ckpt, "--format", "MINDIR", "--batch_size", "3", "--output", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    graph = nn.GraphCell(ms.load(str(out)))
    x = images(3)
    np.testing.assert_allclose(graph(ms.Tensor(x)).asnumpy(), logits_of(net, x), atol=1e-5)


def test_summary_counts_17_58_gmacs_for_vit_b_16(capsys):
    from ms_vit.complexity import total_macs
    from ms_vit.config import model_config

    assert round(total_macs(model_config("vit_b_16")) / 1e9, 2) == 17.58
    assert round(total_macs(model_config("vit_b_16", image_size=384)) / 1e9, 1) == 55.5
    assert run(script("summary"), ["vit_b_16"]) == 0
    out = capsys.readouterr().out
    assert "parameters: 86,567,656" in out and "17.58" in out and "12 x MLP" in out
