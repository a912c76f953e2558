"""Skeletons of the environment overlays (copied without this file)."""
