"""Widgets for a live notebook: the prediction browser and the run's pickers (headless, a table or nothing), and the
configuration table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data import DATASETS
from ..model.archs import ARCHS
from .display import in_notebook, show


def config_table(cfg: Any) -> pd.DataFrame:
    """The run's configuration as a two-column table (parameter, value)."""
    return pd.DataFrame([(k.upper(), repr(v)) for k, v in cfg.to_dict().items()], columns=["parameter", "value"])


def use_widgets(interactive: bool | None) -> bool:
    """Whether to show widgets: ``interactive`` if given, else when running in a notebook kernel with ipywidgets."""
    if interactive is not None:
        return bool(interactive)
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return in_notebook()


def _png(img: np.ndarray, scale: int) -> bytes:
    import io

    from PIL import Image

    pil = Image.fromarray(img if img.ndim == 3 else np.stack([img] * 3, -1))
    buf = io.BytesIO()
    pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST).save(buf, "PNG")
    return buf.getvalue()


def _caption(probs: torch.Tensor, target: Any, class_names: Sequence[str], top: int) -> str:
    row = torch.as_tensor(target)
    if row.ndim == 1:  # multi-label: the true labels and every label's probability
        true = "+".join(class_names[int(j)] for j in row.nonzero().flatten()) or "(none)"
        return f"true: {true}; " + ", ".join(f"{n} {float(p):.2f}" for n, p in zip(class_names, probs, strict=True))
    values, idx = probs.topk(min(top, len(probs)))
    ranked = ", ".join(f"{class_names[int(i)]} {float(v):.2f}" for v, i in zip(values, idx, strict=True))
    verdict = "right" if int(idx[0]) == int(row) else "wrong"
    return f"true: {class_names[int(row)]} — {verdict}; top {len(idx)}: {ranked}"


def prediction_browser(
    images: np.ndarray | Callable[[int], np.ndarray],
    probs: torch.Tensor,
    targets: torch.Tensor,
    class_names: Sequence[str],
    interactive: bool | None = None,
    top: int = 3,
    scale: int = 3,
) -> Any:
    """Browse the predictions one image at a time: a slider, the image and its top classes (every label's
    probability for multi-label) in a live notebook; headless (``interactive`` False, or no notebook), the first ten
    as a table. ``images`` is an array, or a function giving item ``i``'s image (files are then read one at a
    time). Returns the widget or the table."""
    if not use_widgets(interactive):
        rows = [(i, _caption(probs[i], targets[i], class_names, top)) for i in range(min(10, len(targets)))]
        table = pd.DataFrame(rows, columns=["item", "prediction"])
        show(table)
        return table
    import ipywidgets as widgets
    from IPython.display import display

    slider = widgets.IntSlider(value=0, min=0, max=len(targets) - 1, description="item", continuous_update=False)
    # flex-start: in JupyterLab an Image in a VBox otherwise stretches to the output's width (a 1200 px thumbnail)
    picture = widgets.Image(format="png", layout=widgets.Layout(align_self="flex-start"))
    caption = widgets.HTML()

    def update(change: dict | None = None) -> None:
        i = slider.value
        picture.value = _png(images(i) if callable(images) else images[i], scale)
        caption.value = f"<code>{_caption(probs[i], targets[i], class_names, top)}</code>"

    slider.observe(update, names="value")
    update()
    box = widgets.VBox([slider, picture, caption])
    display(box)
    return box


class ConfigPicker:
    """Pickers for a run's architecture, weights and dataset: dropdowns in a live notebook (pick, then run the cells
    below), nothing when headless. :meth:`config` is the run's configuration with the picks (saved again when they
    changed it)."""

    def __init__(self, cfg: Any, datasets: Sequence[str] | None = None, interactive: bool | None = None) -> None:
        self.cfg, self.widget = cfg, None
        if not use_widgets(interactive):
            return
        import ipywidgets as widgets
        from IPython.display import display

        archs = sorted({*ARCHS, cfg.arch})  # a tagged arch ('tresnet_m.miil_in21k') stays pickable
        weights = sorted({"auto", "none", cfg.weights})
        names = sorted({*(datasets or DATASETS), cfg.dataset})
        self.arch = widgets.Dropdown(options=archs, value=cfg.arch, description="ARCH")
        self.weights = widgets.Dropdown(options=weights, value=cfg.weights, description="WEIGHTS")
        self.dataset = widgets.Dropdown(options=names, value=cfg.dataset, description="DATASET")
        self.widget = widgets.HBox([self.arch, self.weights, self.dataset])
        display(self.widget)

    def config(self) -> Any:
        """The configuration with the picked values (unchanged when headless or nothing was changed)."""
        if self.widget is None:
            return self.cfg
        picked = {"arch": self.arch.value, "weights": self.weights.value, "dataset": self.dataset.value}
        if all(getattr(self.cfg, k) == v for k, v in picked.items()):
            return self.cfg
        cfg = self.cfg.with_changes(**picked)
        cfg.save()
        return cfg
