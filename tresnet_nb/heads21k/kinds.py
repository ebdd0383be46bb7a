"""What superclass names mean in WordNet: the synsets a class's sense must descend from to fit its superclass.

A superclass name such as CIFAR-100's 'household_electrical_devices' is no WordNet word; matched word by word it
lets the wrong senses through (television the broadcasting fits no 'device', but neither does the television set,
which WordNet files under electronic equipment). Each entry below lists the synsets whose descendants are the
superclass's members, chosen by reading the WordNet chains of its five classes (tests/test_heads21k.py checks that
every chosen sense lies under its entry): a sense fits its superclass when one of them is among its ancestors.
Superclass names not in the table fall back to the senses of their words (:func:`.names.kinds`).
"""

from __future__ import annotations

from collections.abc import Iterable

from .names import kinds

MAMMAL = "n01861778"
KINDS: dict[str, tuple[str, ...]] = {
    # CIFAR-100's 20 superclasses (tresnet_nb.data.cifar.CIFAR100_SUPERCLASSES); the comments say why an entry
    # is broader than the name: where WordNet files a member elsewhere.
    "aquatic_mammals": (MAMMAL,),  # a beaver is a rodent, an otter a musteline: not WordNet's 'aquatic mammal'
    "fish": ("n02512053",),  # fish
    "flowers": ("n00017222",),  # plant: a rose is a shrub, a tulip a liliaceous plant, not 'flower'
    "food_containers": ("n03094503", "n04381994"),  # container (bottle, bowl, can); tableware (cup, dinner plate)
    "fruit_and_vegetables": ("n07705711",),  # produce: edible fruit and vegetable (mushroom, sweet pepper)
    "household_electrical_devices": ("n03183080", "n03278248"),  # device; electronic equipment (telephone, TV set)
    "household_furniture": ("n03405725",),  # furniture
    "insects": ("n02159955", "n02311060"),  # insect; larva (a caterpillar)
    "large_carnivores": ("n02075296",),  # carnivore, the mammal
    "large_man-made_outdoor_things": ("n04341686", "n04564698"),  # structure, construction; way (a road)
    "large_natural_outdoor_scenes": ("n09287968", "n09334396", "n09225146", "n11425580"),  # geological formation
    # (mountain); land (forest, plain); body of water (sea); atmospheric phenomenon (cloud)
    "large_omnivores_and_herbivores": (MAMMAL,),
    "medium_mammals": (MAMMAL,),
    "non-insect_invertebrates": ("n01905661",),  # invertebrate
    "people": ("n00007846",),  # person
    "reptiles": ("n01661091",),  # reptile
    "small_mammals": (MAMMAL,),
    "trees": ("n13104059",),  # tree, the plant
    "vehicles_1": ("n03100490",),  # conveyance: a train or a bus is public transport, not a vehicle
    "vehicles_2": ("n03100490", "n03418242"),  # conveyance; garden tool (a lawn mower)
    # Plant Pathology 2020's context: its leaf diseases are named after the fungi that cause them (rust: a rust
    # fungus; scab: Venturia), so a sense must be a fungus (the strikebreaker is no scab here)
    "plant_disease": ("n12992868",),  # fungus
}


def kind_synsets(names: Iterable[str]) -> frozenset[str]:
    """The synsets ``names`` (superclass or context names) mean: their ``KINDS`` entries, else their words' senses."""
    out: set[str] = set()
    for name in names:
        out.update(KINDS[name] if name in KINDS else kinds((name,)))
    return frozenset(out)
