"""What a run leaves and shows: the run record, metrics.json (``record``, no torch), plots (``plots``), notebook
display (``display``) and widgets (``widgets``)."""
