import numpy as np
import pytest
from scipy import io

import ms_vit
from ms_vit.data.labels import folder_indexing, imagenet_classes, imagenet_labels, labels_from_meta_mat, resolve_labels


def write_meta_mat(path):
    """The ILSVRC2012 devkit's data/meta.mat layout: a 'synsets' struct array of 1000 leaves plus inner synsets."""
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    rows = [(wnid, names, 0) for wnid, names in imagenet_classes()]
    rows += [(f"n9{i:07d}", f"inner synset {i}, group", 3) for i in range(20)]  # not classes: num_children > 0
    order = np.random.default_rng(0).permutation(len(rows))  # the file is not in WordNet-id order
    synsets = np.zeros(len(rows), dtype=[(f, object) for f in fields])
    for position, k in enumerate(order):
        wnid, words, children = rows[k]
        synsets[position] = (position + 1, wnid, words, "gloss", children, np.zeros(children), 0, 1300)
    io.savemat(str(path), {"synsets": synsets})
    return str(path)


def test_builtin_table():
    assert len(imagenet_classes()) == 1000
    assert imagenet_classes()[236][0] == "n02107142" and imagenet_labels()[236] == "Doberman"
    assert [w for w, _ in imagenet_classes()] == sorted(w for w, _ in imagenet_classes())


def test_meta_mat_gives_the_tutorials_mapping(tmp_path):
    labels = labels_from_meta_mat(write_meta_mat(tmp_path / "meta.mat"))
    assert len(labels) == 1000 and labels[236] == "Doberman" and labels == imagenet_labels()


def test_label_priority(tmp_path):
    assert resolve_labels(3, ["a", "b", "c"], meta_mat="ignored.mat") == ["a", "b", "c"]
    assert resolve_labels(1000)[236] == "Doberman"
    assert resolve_labels(4) == ["0", "1", "2", "3"]
    with pytest.raises(ms_vit.ConfigError, match="gives 1000 classes, the checkpoint has 10"):
        resolve_labels(10, meta_mat=write_meta_mat(tmp_path / "meta.mat"))
    with pytest.raises(ms_vit.ConfigError, match="does not exist"):
        resolve_labels(1000, meta_mat=str(tmp_path / "missing.mat"))


def test_wordnet_folders_map_to_imagenet_indices():
    assert folder_indexing(["n01440764", "n02107142"], 1000) == {"n01440764": 0, "n02107142": 236}
    with pytest.raises(ms_vit.ConfigError, match="n99999999 match none of the ImageNet-1k WordNet ids"):
        folder_indexing(["n02107142", "n99999999"], 1000, source="val")
    assert folder_indexing(["b"], 3, ["a", "b", "c"]) == {"b": 1}
    with pytest.raises(ms_vit.ConfigError, match="did you mean the val/ folder"):
        folder_indexing(["train", "val"], 3, ["a", "b", "c"], source="data")
