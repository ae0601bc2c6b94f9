"""Experiment tracking for plain PyTorch loops: trusted checkpoints, metrics, plots, config and results.

The classes write an *experiment directory*, which is a Trainboard run directory (see
:mod:`collectors.runformat`) plus ``config.json``, ``results.json``, ``checkpoints/`` and
``visualizations/``, so the dashboard shows an experiment live without further code. Everything is
importable from ``collectors`` (``from collectors import CheckpointManager``); torch and matplotlib are
imported only by the functions that need them.
"""
from __future__ import annotations
