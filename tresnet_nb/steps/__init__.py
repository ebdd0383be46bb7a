"""The notebook steps (``data``, ``results``) and the headless train job built from them (``job``): what the
notebooks and ``python -m tresnet_nb train`` call."""
