"""Models: the architectures and their input sizes (``archs``), loading with weights from timm tags, the hub or
official Alibaba-MIIL files (``load``, ``hub``, ``weights``), InPlace-ABN (``iabn``, ``iabn_convert``), activation
memory (``memory``), the one training step and max-batch search of the probe and the engine (``steps``), and export
(``export``). Never sees a RunConfig."""
