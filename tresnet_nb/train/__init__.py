"""Training on fastai: the recipes (``recipes``), the learner and its options (``learner``), the staged, resumable
fit (``fit``, ``checkpoint``), callbacks (``callbacks``, ``mix``), the optimizer and losses (``optim``, ``losses``),
and data-parallel training (``distributed``)."""
