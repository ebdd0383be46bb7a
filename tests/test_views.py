"""Views: the prediction browser as a widget and as its headless table."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from tresnet_nb.report.widgets import prediction_browser, use_widgets

NAMES = ("cat", "dog", "fox")


@pytest.fixture
def predictions():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 8, 8), dtype=np.uint8)
    probs = torch.softmax(torch.tensor(rng.normal(size=(12, 3)), dtype=torch.float32), 1)
    targets = probs.argmax(1).clone()
    targets[0] = (targets[0] + 1) % 3  # one mistake
    return images, probs, targets


def test_headless_browser_is_a_table_of_the_first_ten(predictions):
    images, probs, targets = predictions
    table = prediction_browser(images, probs, targets, NAMES, interactive=False)
    assert len(table) == 10 and "wrong" in table.prediction[0] and "right" in table.prediction[1]
    assert f"true: {NAMES[int(targets[0])]}" in table.prediction[0]
    assert not use_widgets(None)  # in a test process (no notebook kernel) the default is headless


def test_widget_browser_follows_its_slider(predictions):
    pytest.importorskip("ipywidgets")
    images, probs, targets = predictions
    box = prediction_browser(images, probs, targets, NAMES, interactive=True)
    slider, picture, caption = box.children
    assert (slider.min, slider.max) == (0, 11) and "wrong" in caption.value
    first_png = bytes(picture.value)
    assert first_png.startswith(b"\x89PNG")
    slider.value = 1
    assert "right" in caption.value and bytes(picture.value) != first_png


def test_config_picker_headless_and_live(tmp_path):
    from tresnet_nb import RunConfig
    from tresnet_nb.report.widgets import ConfigPicker

    cfg = RunConfig.from_params("p", preset="smoke", output_dir=str(tmp_path))
    assert ConfigPicker(cfg, interactive=False).config() is cfg  # headless: the parameters as given
    pytest.importorskip("ipywidgets")
    picker = ConfigPicker(cfg, datasets=("fashion_mnist", "cifar10"), interactive=True)
    assert picker.config() is cfg and set(picker.dataset.options) == {"fashion_mnist", "cifar10"}
    picker.arch.value, picker.dataset.value = "tresnet_l", "cifar10"
    picked = picker.config()
    assert (picked.arch, picked.dataset, picked.weights) == ("tresnet_l", "cifar10", cfg.weights)
    assert '"arch": "tresnet_l"' in (tmp_path / "run_config.json").read_text()  # saved with the picks


def test_multi_label_captions_and_lazy_images():
    probs = torch.tensor([[0.9, 0.2, 0.7]])
    table = prediction_browser(
        lambda i: np.zeros((4, 4, 3), np.uint8), probs, torch.tensor([[1.0, 0.0, 1.0]]), NAMES, interactive=False
    )
    assert table.prediction[0] == "true: cat+fox; cat 0.90, dog 0.20, fox 0.70"
    pytest.importorskip("ipywidgets")
    seen = []
    box = prediction_browser(
        lambda i: seen.append(i) or np.zeros((4, 4, 3), np.uint8),
        probs,
        torch.tensor([[1.0, 0.0, 1.0]]),
        NAMES,
        interactive=True,
    )
    assert seen == [0] and "cat+fox" in box.children[2].value  # images are read one at a time, when shown


@pytest.fixture
def colab_shell(monkeypatch):
    """A Colab-shaped kernel: ``get_ipython()`` returns a ``google.colab._shell.Shell``, a subclass of ipykernel's
    ZMQInteractiveShell under another name (made without __init__: the real one needs a running kernel)."""
    import types

    import IPython
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ipykernel.zmqshell import ZMQInteractiveShell

    plt.close(plt.figure())  # pyplot sets up its REPL hook now, before get_ipython returns the bare shell
    module = types.ModuleType("google.colab._shell")
    shell_class = type("Shell", (ZMQInteractiveShell,), {"__module__": module.__name__})
    module.Shell = shell_class
    monkeypatch.setitem(sys.modules, "google.colab._shell", module)
    shell = object.__new__(shell_class)
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *objs, **kw: shown.extend(objs))
    return shown


def test_colab_kernel_shows_plots_and_widgets(colab_shell):
    import matplotlib.pyplot as plt

    from tresnet_nb.report.display import finish, in_notebook

    assert type(sys.modules["IPython"].get_ipython()).__name__ == "Shell"
    assert in_notebook() and use_widgets(None)
    fig = plt.figure()
    finish(fig, None)
    assert colab_shell == [fig]  # displayed in the notebook, not only saved


def test_a_terminal_ipython_is_no_notebook(monkeypatch):
    import IPython

    class TerminalInteractiveShell:  # IPython in a terminal: a shell, but no kernel
        pass

    monkeypatch.setattr(IPython, "get_ipython", TerminalInteractiveShell)
    from tresnet_nb.report.display import in_notebook

    assert not in_notebook() and not use_widgets(None)


def test_the_confusion_matrix_says_what_its_colours_and_numbers_are(monkeypatch):
    import tresnet_nb.report.plots as plots

    shown = []
    monkeypatch.setattr(plots, "finish", lambda fig, path: shown.append(fig))
    confusion = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 5]])
    plots.plot_confusion(confusion, NAMES)
    (fig,) = shown
    heat, bar = fig.axes
    assert bar.get_ylabel() == "share of the true class's images (row)"
    assert "numbers: images" in heat.get_title() and "share of the true class" in heat.get_title()
    assert [t.get_text() for t in heat.texts][:3] == ["8", "2", "0"]  # counts in the cells
    assert heat.images[0].get_array()[1, 1] == pytest.approx(0.75)  # 3 of 4 true 'dog' images: the colour
