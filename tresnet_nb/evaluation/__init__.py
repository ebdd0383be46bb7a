"""Scoring predictions: metrics (``metrics``), the dataset's score of a run (``scores``) and Kaggle submission files
(``submissions``)."""
