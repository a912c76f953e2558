"""Render the package files (ebuild, metadata.xml) from ``ebuild_templates/``.

Templates are package data (``releaser.ebuild_templates``), loaded with
importlib.resources so an installed releaser carries them; their variables
are documented in ``ebuild_templates/__init__.py``.
"""

from __future__ import annotations


import jinja2

from .config import AppConfig, DatabaseConfig

TEMPLATE_PACKAGE = "releaser.ebuild_templates"


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("releaser.ebuild_templates", ""),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def template_variables(app: AppConfig, distfiles_url: str, db: DatabaseConfig, year: int) -> dict:
    return {
        "name": app.name,
        "category": app.category,
        "description": app.description,
        "homepage": app.homepage,
        "license": app.license,
        "distfiles_url": distfiles_url.rstrip("/"),
        "rdepend": list(app.rdepend),
        "db_path": db.path,
        "year": year,
    }


def render_ebuild(variables: dict) -> str:
    return _environment().get_template("ebuild.j2").render(**variables)


def render_metadata(variables: dict) -> str:
    return _environment().get_template("metadata.xml.j2").render(**variables)
