"""Sweeps of agent runs over a grid of settings, launched on Ray (`python -m sweeps.launch --help`)."""
