"""ImageNet-21K heads: label sets, hierarchical decoding (official tree format), name matching on the real class
lists, head transplant (exact rows and logits) and the predict command; synthetic weights, no download."""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tresnet_nb import load_model, weights_info
from tresnet_nb.__main__ import main
from tresnet_nb.heads21k import (
    chain_text,
    coverage_table,
    dataset_classes,
    definition,
    hierarchy_for,
    label_set,
    label_set_for,
    lemma,
    load_labelled_model,
    match_dataset,
    match_names,
    parse_overrides,
    predict_images,
    read_tree_file,
    transplant_head,
    tree_file_hierarchy,
    wordnet_hierarchy,
)
from tresnet_nb.heads21k.kinds import KINDS
from tresnet_nb.heads21k.predict import RANDOM_WARNING
from tresnet_nb.heads21k.wordnet import TREE_FILE, ancestors, parents, read_tree_text

ROOT = Path(__file__).resolve().parents[1]
WORDNET = Path("/usr/share/wordnet")
SIZE = 64  # px: TResNet-M with a 21K head is slow on a CPU at 224


# ---- label sets -------------------------------------------------------------------------------------------------


def test_label_sets_from_timm_and_by_head_size():
    fall11, winter21 = label_set("fall11"), label_set("winter21")
    assert (len(fall11), len(winter21)) == (11221, 10450)
    assert set(winter21.synsets) <= set(fall11.synsets)
    assert label_set_for(11221) is fall11 and label_set_for(10450) is winter21
    assert label_set_for(1000).name == "imagenet1k"
    assert lemma("n02111889") == "Samoyed, Samoyede"
    assert fall11.definitions[fall11.index["n02111889"]].startswith("Siberian breed of white or cream-colored dog")
    with pytest.raises(ValueError, match=r"12345 classes.*11221 \(fall11\), 10450 \(winter21\)"):
        label_set_for(12345)
    with pytest.raises(ValueError, match="Unknown label set 'fall2011'"):
        label_set("fall2011")


# ---- hierarchical decoding ----------------------------------------------------------------------------------------

# A small tree in the authors' format: class_tree_list[i] is i, then its ancestors (leaf first).
TREE = {
    "class_list": [
        "n00000010",
        "n00000020",
        "n00000030",
        "n00000040",
        "n00000050",
        "n00000060",
        "n00000070",
        "n00000080",
        "n00000090",
        "n00000100",
    ],
    "class_description": {
        "n00000010": "animal",
        "n00000020": "plant",
        "n00000030": "dog",
        "n00000040": "cat",
        "n00000050": "flower",
        "n00000060": "Samoyed",
        "n00000070": "pug",
        "n00000080": "rose",
        "n00000090": "white Samoyed",
        "n00000100": "black pug",
    },
    "class_tree_list": [[0], [1], [2, 0], [3, 0], [4, 1], [5, 2, 0], [6, 2, 0], [7, 4, 1], [8, 5, 2, 0], [9, 6, 2, 0]],
}


@pytest.fixture
def tree_file(tmp_path):
    path = tmp_path / "imagenet21k_miil_tree.pth"
    torch.save(TREE, path)
    return path


def test_semantic_softmax_on_an_official_format_tree_file(tree_file):
    hierarchy = tree_file_hierarchy(tree_file)
    assert hierarchy.source == f"tree file {tree_file}"
    # depths 0, 1, 2 hold several classes each; the deepest (3) is left out as in the authors' semantics.py
    assert [list(level) for level in hierarchy.levels()] == [[0, 1], [2, 3, 4], [5, 6, 7]]
    assert [list(level) for level in hierarchy.levels(deepest=True)][-1] == [8, 9]
    logits = torch.full((3, 10), -5.0)
    logits[0, [0, 2, 5, 8]] = 5.0  # animal, dog, Samoyed, white Samoyed
    logits[1, [1, 4]] = 5.0  # plant, flower; nothing clear below
    chains = hierarchy.decode(logits)  # image 2: all equal -> 1/2, 1/3, 1/3: nothing exceeds 0.5
    assert chain_text(chains[0]) == "animal > dog > Samoyed"
    assert [(p.level, p.index, p.synset) for p in chains[0]] == [
        (0, 0, "n00000010"),
        (1, 2, "n00000030"),
        (2, 5, "n00000060"),
    ]
    assert all(p.probability > 0.99 for p in chains[0])
    assert chain_text(chains[1]) == "plant > flower" and chains[2] == []
    assert chain_text(hierarchy.decode(logits, deepest=True)[0]) == "animal > dog > Samoyed > white Samoyed"
    # a level is reported when its probability exceeds the threshold (strictly, as in the authors' code)
    assert [p.name for p in hierarchy.decode(logits[2:], threshold=0.4)[0]] == ["animal"]
    assert hierarchy.decode(torch.zeros(1, 10), threshold=0.5)[0] == []
    with pytest.raises(ValueError, match=r"shape \(1, 11\).*10 classes"):
        hierarchy.decode(torch.zeros(1, 11))


def test_a_level_needs_more_than_one_class(tmp_path):
    path = tmp_path / "tree.pth"
    torch.save(
        {
            "class_list": ["a", "b", "c", "d", "e"],
            "class_description": {},
            "class_tree_list": [[0], [1], [2, 0], [3, 2, 0], [4, 2, 0]],
        },
        path,
    )
    # depth 1 holds one class: no level; depth 2 is the deepest
    assert [list(level) for level in tree_file_hierarchy(path).levels(deepest=True)] == [[0, 1], [3, 4]]


def test_tree_file_is_read_safely(tmp_path, tree_file):
    numpy_tree = tmp_path / "numpy_tree.pth"  # numpy arrays and scalars are allowed and come back as plain values
    torch.save(
        {
            **TREE,
            "class_tree_list": [np.array(t) for t in TREE["class_tree_list"]],
            "class_list": np.array(TREE["class_list"]),
        },
        numpy_tree,
    )
    assert read_tree_file(numpy_tree) == read_tree_file(tree_file) == TREE
    evil = tmp_path / "evil.pth"
    torch.save({**TREE, "class_description": Path("/etc/passwd")}, evil)  # any object beyond plain data
    with pytest.raises(pickle.UnpicklingError):
        read_tree_file(evil)
    bad = tmp_path / "bad.pth"
    torch.save({**TREE, "class_tree_list": [[1], *TREE["class_tree_list"][1:]]}, bad)
    with pytest.raises(ValueError, match=r"class_tree_list\[0\] = \[1\] does not start with its own index 0"):
        tree_file_hierarchy(bad)
    with pytest.raises(ValueError, match="unlike the head's fall11 label set"):
        hierarchy_for(label_set("fall11"), tree_file)


def test_shipped_wordnet_hierarchy_gives_the_authors_levels():
    hierarchy = hierarchy_for(label_set("fall11"), None)
    assert hierarchy.source.startswith("WordNet 3.0 hypernyms") and "fall11" in hierarchy.source
    assert len(hierarchy.levels()) == 11  # the 11 levels of the authors' semantic softmax (ImageNet-21K-P paper)
    samoyed = label_set("fall11").index["n02111889"]
    logits = torch.full((1, 11221), -10.0)
    logits[0, list(hierarchy.class_tree[samoyed])] = 10.0
    assert chain_text(hierarchy.decode(logits)[0]) == (
        "animal > vertebrate > mammal > placental > carnivore > canine > dog > spitz > Samoyed"
    )
    assert len(wordnet_hierarchy(label_set("winter21")).class_list) == 10450


@pytest.mark.skipif(
    not (WORDNET / "data.noun").is_file(),
    reason="WordNet 3.0 not installed (apt-get install wordnet-base): the shipped tree cannot be regenerated here",
)
def test_shipped_tree_is_what_the_tool_writes_from_wordnet():
    spec = importlib.util.spec_from_file_location("wordnet_hierarchy", ROOT / "tools" / "wordnet_hierarchy.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert gzip.decompress(tool.build(WORDNET)).decode() == read_tree_text()
    assert TREE_FILE.stat().st_size < 400_000


def test_every_shipped_synset_has_lemmas_and_a_definition():
    # timm's ImageNet tables give them for the 21,843 ImageNet synsets, the shipped file for the others (its
    # glosses: e.g. the ancestors 'baby' and 'dinosaur', the dinner plate)
    missing = [s for s in parents() if lemma(s) == s or not definition(s)]
    assert not missing, missing[:10]
    assert definition("n09827683").startswith("a very young child")  # baby, babe, infant: an ancestor only
    assert definition("n03959485") == "dish on which food is served or from which food is eaten"


# ---- name matching on the real class lists ------------------------------------------------------------------------


def test_coverage_of_the_real_class_lists(capsys):
    table = coverage_table()
    with capsys.disabled():
        print("\n" + table.to_string(index=False))
    cover = {(r["dataset"], r["label set"]): r for r in table.to_dict("records")}
    assert len(table) == 8 and (table["classes"] == table[["matched", "via ancestor", "random"]].sum(axis=1)).all()
    assert cover[("cifar10", "fall11")]["matched"] == 10
    assert cover[("cifar100", "fall11")]["matched"] >= 90 and cover[("cifar100", "fall11")]["random"] <= 3
    assert cover[("flowers102", "fall11")]["matched"] + cover[("flowers102", "fall11")]["via ancestor"] >= 90


@pytest.mark.parametrize(
    ("dataset", "name", "synset"),
    [
        ("cifar10", "airplane", "n02691156"),
        ("cifar10", "bird", "n01503061"),  # not the shuttlecock
        ("cifar100", "mouse", "n02330245"),  # the rodent (small_mammals), not the computer mouse
        ("cifar100", "tank", "n04389033"),  # the army tank (vehicles_2), not a storage tank or a tank car
        ("cifar100", "orange", "n07747607"),  # the fruit (fruit_and_vegetables), not the colour or the tree
        ("cifar100", "apple", "n07739125"),
        ("cifar100", "bridge", "n02898711"),  # the structure, not the nosepiece of glasses
        ("cifar100", "couch", "n04256520"),  # sofa
        ("cifar100", "sunflower", "n11978233"),
        ("cifar100", "maple_tree", "n12752205"),  # 'maple tree': the maple that is a tree
        ("cifar100", "aquarium_fish", "n02512053"),  # head word 'fish': via an ancestor
        ("flowers102", "sunflower", "n11978233"),
        ("flowers102", "barbeton daisy", "n11971927"),  # a spelling slip of 'Barberton daisy'
        ("flowers102", "colt's foot", "n12029635"),  # coltsfoot
        ("flowers102", "bird of paradise", "n12489815"),  # the plant, not the bird
        # superclasses as WordNet synsets (heads21k.kinds): the sense must descend from one
        ("cifar100", "television", "n04405907"),  # the receiver (electronic equipment), not broadcasting
        ("cifar100", "plate", "n03959485"),  # the dinner plate (tableware, not in fall11), not the collection plate
        ("cifar100", "bus", "n02924116"),  # WordNet's first sense before the closest to the peers (not a jalopy)
        ("cifar100", "lawn_mower", "n03649909"),  # a garden tool: vehicles_2 lists it
        ("plant_pathology", "scab", None),  # no sense is a fungus (the context): random, not a strikebreaker
        # classes exclude each other: not a kind of another class's first choice
        ("cifar100", "castle", "n02980441"),  # the fortified building, not the palace (a kind of house)
        ("cifar100", "house", "n03544360"),  # the dwelling stays: it is not a kind of castle
        ("cifar100", "girl", "n10084295"),  # female child, not the young woman (a kind of woman)
        ("cifar100", "boy", "n10285313"),  # male child, not a grown man
        ("flowers102", "black-eyed susan", "n12008487"),  # Rudbeckia, not Hibiscus trionum (a kind of hibiscus)
        # compounds WordNet lists are found as themselves, not by their head word
        ("flowers102", "thorn apple", "n12903367"),  # Datura, not the apple tree
        ("flowers102", "sweet pea", "n12540800"),  # Lathyrus, not the pea plant
        ("flowers102", "lenten rose", "n11734493"),  # a hellebore, not a rose
        ("flowers102", "canna lily", "n12350959"),
        # every sense of a shipped word that a class can represent
        ("flowers102", "sword lily", "n12417382"),  # gladiolus, not the genus iris
        ("flowers102", "lotus", "n11717399"),  # sacred lotus (WordNet's first sense)
        ("flowers102", "watercress", "n11869689"),  # the plant, not the salad
    ],
)
def test_spot_checks(dataset, name, synset):
    found = {m.name: m for m in match_dataset(dataset).matches}[name]
    assert found.synset == synset, (found, lemma(found.synset or ""))


@pytest.mark.parametrize("label_set_name", ["fall11", "winter21"])
def test_the_reported_wrong_senses_and_their_rows(label_set_name):
    cifar = {m.name: m for m in match_dataset("cifar100", label_set_name).matches}
    flowers = {m.name: m for m in match_dataset("flowers102", label_set_name).matches}
    assert (cifar["television"].status, cifar["television"].row_synset) == ("matched", "n04405907")
    assert (cifar["castle"].status, cifar["castle"].row_synset) == ("matched", "n02980441")
    assert "not a kind of another class ('house')" in cifar["castle"].reason and "n03878066" in cifar["castle"].others
    # the dinner plate is in neither label set: its nearest ancestor's row, tableware
    assert (cifar["plate"].status, cifar["plate"].row_synset) == ("ancestor", "n04381994")
    assert "n03960374" in cifar["plate"].others  # the collection plate, set aside
    thorn = flowers["thorn apple"]  # Datura: its nearest ancestor in the label set is 'plant'
    assert (thorn.how, thorn.status, thorn.row_synset) == ("lemma", "ancestor", "n00017222")
    assert "n12633994" not in ancestors(thorn.synset) and definition(thorn.synset).endswith("genus Datura")


@pytest.mark.parametrize("label_set_name", ["fall11", "winter21"])
def test_cifar100_senses_lie_under_their_superclass_synsets(label_set_name):
    names = dataset_classes("cifar100")
    assert set(names.superclasses.values()) <= set(KINDS) and all(s in parents() for v in KINDS.values() for s in v)
    for m in match_dataset("cifar100", label_set_name).matches:
        if m.synset is not None:  # 'sea' is not under any 21K class, so the shipped tree does not hold it
            assert set(KINDS[names.superclasses[m.name]]) & set(ancestors(m.synset)), (m.name, lemma(m.synset))
    # and every listed choice shows its definition
    for dataset in ("cifar10", "cifar100", "flowers102", "plant_pathology", "fashion_mnist"):
        table = match_dataset(dataset, label_set_name).table()
        assert (table["definition"] != "")[table["synset"] != ""].all(), dataset


def test_user_folder_names_and_their_table():
    match = match_names(["daisy", "dandelion", "roses", "sunflowers", "tulips"], "fall11")
    assert [m.synset for m in match.matches] == ["n11939491", "n12024176", "n12620196", "n11978233", "n12454159"]
    table = match.table()
    assert list(table.columns[:6]) == ["class", "status", "synset", "lemmas", "definition", "head row"]
    assert table.loc[0, "definition"].startswith("any of numerous composite plants")
    mouse = {m.name: m for m in match_dataset("cifar100").matches}["mouse"]
    assert "fits the superclass 'small_mammals'" in mouse.reason and "n03793489" in mouse.others


def test_overrides():
    match = match_dataset("cifar100", overrides={"mouse": "n03793489", "tank": None})
    chosen = {m.name: m for m in match.matches}
    assert (chosen["mouse"].synset, chosen["mouse"].how, chosen["mouse"].status) == ("n03793489", "override", "matched")
    assert chosen["tank"].status == "random" and chosen["tank"].row is None
    assert parse_overrides("mouse = n03793489, tank=none") == {"mouse": "n03793489", "tank": None}
    with pytest.raises(ValueError, match="'n99999999' is not a synset"):
        match_dataset("cifar10", overrides={"cat": "n99999999"})
    with pytest.raises(ValueError, match=r"Overrides for \['kitten'\], which are not class names"):
        match_dataset("cifar10", overrides={"kitten": "n02121620"})
    with pytest.raises(ValueError, match="is not NAME=SYNSET"):
        parse_overrides("mouse")


# ---- head transplant ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model21k():
    """TResNet-M with an 11,221-class head whose rows are known: row i is (sin(i + j) / 10)_j with bias i / 1000."""
    torch.manual_seed(0)
    model = load_model("tresnet_m", None, num_classes=11221).eval()
    fc = model.get_classifier()
    with torch.no_grad():
        rows = torch.arange(11221.0)[:, None] + torch.arange(fc.in_features)[None]
        fc.weight.copy_(torch.sin(rows) / 10)
        fc.bias.copy_(torch.arange(11221.0) / 1000)
    return model


def test_transplant_copies_exactly_the_matched_rows(model21k):
    match = match_dataset("cifar100")
    transplanted = transplant_head(model21k, match)
    source, target = model21k.get_classifier(), transplanted.get_classifier()
    assert target.weight.shape == (100, source.in_features)
    for i, m in enumerate(match.matches):
        if m.row is None:  # random rows: none of them is a 21K row
            assert m.status == "random" and not (source.weight == target.weight[i]).all(dim=1).any()
        else:
            assert torch.equal(target.weight[i], source.weight[m.row]) and torch.equal(
                target.bias[i], source.bias[m.row]
            )
    info = weights_info(transplanted)
    assert (info.head, info.num_classes, info.pretrained) == ("transplanted", 100, False)
    assert source.weight.shape[0] == 11221 and weights_info(model21k).head == "random"  # the 21K model is untouched
    with pytest.raises(ValueError, match="matched to winter21"):
        transplant_head(model21k, match_dataset("cifar10", "winter21"))


def test_transplanted_logits_are_the_21k_logits_of_those_rows(model21k):
    match = match_dataset("cifar10")
    transplanted = transplant_head(model21k, match).eval()
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, small = model21k(x), transplanted(x)
    torch.testing.assert_close(small, full[:, [m.row for m in match.matches]], rtol=1e-5, atol=1e-5)


# ---- readable predictions and the predict command -----------------------------------------------------------------


def test_predictions_are_readable_and_say_the_weights_are_random(model21k):
    images = [np.full((40, 50, 3), 30 * k, dtype=np.uint8) for k in range(3)]
    predictions = predict_images(model21k, images, top=4, hierarchy=True, img_size=SIZE)
    assert len(predictions.top) == 3 and all(len(t) == 4 for t in predictions.top)
    fall11 = label_set("fall11")
    for top in predictions.top:
        assert [p for _, _, p in top] == sorted((p for _, _, p in top), reverse=True)
        assert all(lemma(s) == text and s in fall11.index for s, text, _ in top)
    assert predictions.text().startswith(RANDOM_WARNING) and predictions.chains is not None
    table = predictions.table()
    assert list(table.columns) == ["image", "rank", "synset", "lemma", "probability", "hierarchy"] and len(table) == 12


def test_predict_command(tmp_path, closed_hub, capsys):
    image = tmp_path / "dog.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
    # a tag named and not to be had offline is an error, not random predictions
    assert main(["predict", str(image), "--arch", "tresnet_m.miil_in21k", "--top", "3"]) == 2
    assert "tresnet_m.miil_in21k" in capsys.readouterr().err
    code = main(
        [
            "predict",
            str(image),
            "--arch",
            "tresnet_m.miil_in21k",
            "--weights",
            "none",
            "--top",
            "3",
            "--hierarchy",
            "--img-size",
            str(SIZE),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == RANDOM_WARNING and "label set: fall11; hierarchy: WordNet 3.0" in lines[1]
    assert lines[2] == str(image) and len([line for line in lines if line.startswith("    0.")]) == 3
    assert lines[-1].startswith("  hierarchy: ")
    code = main(["predict", str(image), "--arch", "tresnet_m", "--weights", "none", "--hierarchy"])
    assert code == 2 and "--hierarchy needs a 21K head" in capsys.readouterr().err


def test_winter21_heads_and_pretrained_output(model21k, monkeypatch):
    winter = load_labelled_model("tresnet_m.miil_in21k", None, "winter21")
    assert winter.num_classes == 10450 and weights_info(winter).num_classes == 10450
    image = [np.zeros((32, 32, 3), dtype=np.uint8)]
    predictions = predict_images(winter, image, top=2, hierarchy=True, img_size=SIZE)
    assert predictions.label_set == "winter21" and "(winter21)" in predictions.hierarchy_source
    monkeypatch.setattr(model21k, "weights_info", replace(weights_info(model21k), pretrained=True))
    text = predict_images(model21k, image, top=2, img_size=SIZE).text()
    assert "RANDOM" not in text and text.startswith("label set: fall11")
