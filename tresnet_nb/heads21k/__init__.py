"""ImageNet-21K heads: label sets (fall11, winter21), readable and hierarchical predictions, head transplant.

- :mod:`.labels`: the classes of a head in output order, with WordNet lemmas and definitions (timm's ImageNetInfo).
- :mod:`.hierarchy`: the authors' semantic softmax over the hierarchy levels, from their tree file or the WordNet
  tree shipped in ``tresnet_nb/data`` (:mod:`.wordnet`).
- :mod:`.predict`: top-k and hierarchical predictions for images, and the ``predict`` command.
- :mod:`.names`, :mod:`.matching`: a dataset's class names matched to 21K classes, sense by sense; :mod:`.kinds`:
  the WordNet synsets that superclass names (CIFAR-100's) mean.
- :mod:`.transplant`: a target classifier built from the matched 21K rows; the coverage table.
- :mod:`.compare`: notebook 07's zero-shot / transplant / random-head comparison and its record.
"""

from .compare import Arm, comparison_table, fine_tune, record, verdict, zero_shot
from .hierarchy import (
    Hierarchy,
    LevelPick,
    chain_text,
    hierarchy_for,
    read_tree_file,
    tree_file_hierarchy,
    wordnet_hierarchy,
)
from .kinds import KINDS
from .labels import LABEL_SETS, LabelSet, definition, label_set, label_set_for, lemma
from .matching import ClassMatch, HeadMatch, match_classes, parse_overrides
from .names import candidates
from .predict import (
    Predictions,
    load_labelled_model,
    plot_predictions,
    predict_images,
    sample_images,
    show_predictions,
)
from .transplant import (
    DATASET_CLASSES,
    coverage_table,
    dataset_classes,
    match_dataset,
    match_names,
    new_head,
    transplant_head,
)

__all__ = [
    "Arm",
    "ClassMatch",
    "DATASET_CLASSES",
    "HeadMatch",
    "Hierarchy",
    "KINDS",
    "LABEL_SETS",
    "LabelSet",
    "LevelPick",
    "Predictions",
    "candidates",
    "chain_text",
    "comparison_table",
    "coverage_table",
    "dataset_classes",
    "definition",
    "fine_tune",
    "hierarchy_for",
    "label_set",
    "label_set_for",
    "lemma",
    "load_labelled_model",
    "match_classes",
    "match_dataset",
    "match_names",
    "new_head",
    "parse_overrides",
    "plot_predictions",
    "predict_images",
    "sample_images",
    "read_tree_file",
    "record",
    "show_predictions",
    "transplant_head",
    "tree_file_hierarchy",
    "verdict",
    "wordnet_hierarchy",
    "zero_shot",
]
