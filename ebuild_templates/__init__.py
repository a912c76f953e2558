"""Jinja2 templates of the package files releaser renders."""
