"""The environment overlay skeleton, package data (copied without this file)."""
