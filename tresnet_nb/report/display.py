"""Showing things in a notebook: tables, Markdown and figures displayed when a Jupyter kernel runs the code (JupyterLab,
Colab, Kaggle, papermill), printed (and figures saved as PNG) otherwise; the weights banner."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

    from ..model.load import WeightsInfo


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Colab, Kaggle, papermill), False in a terminal or script.

    A kernel's shell is ipykernel's ZMQInteractiveShell or a subclass of it: Colab's is ``google.colab._shell.Shell``,
    so the test is ``isinstance``, not the class name."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    try:  # lazily: a kernel has imported it already; a terminal without ipykernel is no notebook
        from ipykernel.zmqshell import ZMQInteractiveShell
    except ImportError:
        return False
    return isinstance(shell, ZMQInteractiveShell)


def show(obj: Any) -> None:
    """Display ``obj`` (DataFrame, dict as a two-column table, Markdown, figure) in a notebook, or print it."""
    if isinstance(obj, dict):
        obj = pd.DataFrame([(k, v if isinstance(v, str) else repr(v)) for k, v in obj.items()], columns=["", "value"])
    if in_notebook():
        from IPython.display import display

        display(obj)
    else:
        print(obj.to_string() if isinstance(obj, pd.DataFrame) else obj)


def finish(fig: plt.Figure, path: Path | str | None) -> None:
    """Save ``fig`` to ``path`` (if given), show it in a notebook, and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    if in_notebook():
        from IPython.display import display

        display(fig)
    plt.close(fig)


def weights_banner(info: WeightsInfo) -> str:
    """A plain statement of where the weights came from; loud when they are random."""
    if info.pretrained:
        text = f"**Weights:** {info.arch} pretrained, from {info.source} `{info.location}`; head: {info.head}."
    else:
        reason = f" Reason: {info.note}" if info.note else " (asked for: random initialisation)"
        text = f"**Weights: RANDOM initialisation** for {info.arch}; results are from training from scratch.{reason}"
    if in_notebook():
        from IPython.display import Markdown, display

        display(Markdown(text))
    else:
        print(text.replace("**", "").replace("`", ""))
    return text
