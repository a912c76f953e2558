"""Render the package files (ebuild, metadata.xml) from ``ebuild_templates/``.

Templates are package data (``releaser.ebuild_templates``), loaded with
importlib.resources so an installed releaser carries them; their variables
are documented in ``ebuild_templates/__init__.py``.

The ebuild is bash that Portage sources as root in every phase on every node,
so no configured text may reach it as code.  Two layers hold that:

1. ``releaser.config.validate`` refuses, when the configuration loads, any value
   that is not plainly what its key means (a DESCRIPTION with ``"``, ``$``,
   a backquote or a newline; a HOMEPAGE that is not a URL; ...);
2. the ebuild template prints values only through the ``bash`` filter, which
   makes each one an inert double-quoted bash word; the environment's
   ``finalize`` refuses to print anything else (only integers pass), so a
   template line that forgets the filter fails the build instead of shipping.

The rendered text is then parsed by ``bash -n``.  metadata.xml is XML and
rendered with Jinja's XML/HTML autoescaping.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any, Iterable

import jinja2

from releaser.config import AppConfig, DatabaseConfig
from releaser.errors import BuildError, last_line

TEMPLATE_PACKAGE = "releaser.ebuild_templates"

#: The characters bash still interprets inside double quotes (history expansion is off
#: in a non-interactive shell, so ``!`` is literal).
_DQ_SPECIAL = re.compile(r'([\\$`"])')


class BashWord(str):
    """Text that the ``bash`` filter made into one inert bash word."""


def bash_quote(value: str | Iterable[str], tail: str = "") -> BashWord:
    """``value`` as one double-quoted bash word that bash reads back literally.

    Inside double quotes only backslash, ``$``, the backquote and ``"`` mean
    anything to bash; each is escaped with a backslash, so no expansion, no
    command substitution and no end of the word can come from ``value``.
    Double quotes (not ``shlex.quote``'s single quotes) because Gentoo writes
    ``DESCRIPTION="..."`` and pkgcheck parses it so.

    ``tail`` is template text, trusted, placed unescaped inside the same quotes
    (``SRC_URI={{ url | bash("/${P}.tar.gz") }}``).  A list becomes one word
    with an item per line, as Gentoo writes dependency lists.
    """
    if not isinstance(value, str):
        items = [_checked(item) for item in value]
        value = "".join(f"\n\t{item}" for item in items) + ("\n" if items else "")
    escaped = _DQ_SPECIAL.sub(r"\\\1", _checked(value))
    return BashWord(f'"{escaped}{tail}"')


def _checked(value: Any) -> str:
    if not isinstance(value, str):
        raise BuildError(f"ebuild template: {value!r} is not text; only text is quoted for bash")
    if "\0" in value:
        raise BuildError(f"ebuild template: {value!r} holds a NUL byte, which bash cannot carry")
    return value


def _only_quoted(value: Any) -> Any:
    """``finalize`` of the ebuild environment: every printed value went through ``bash``."""
    if isinstance(value, BashWord) or type(value) is int:
        return value
    raise BuildError(f"ebuild template prints {value!r} without the bash filter; "
                     "every value in the ebuild must be written {{ value | bash }}")


def _loader() -> jinja2.BaseLoader:
    return jinja2.PackageLoader(TEMPLATE_PACKAGE, "")


def _ebuild_environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=_loader(), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False,
                             finalize=_only_quoted)
    env.filters["bash"] = bash_quote
    return env


def _xml_environment() -> jinja2.Environment:
    return jinja2.Environment(loader=_loader(), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, autoescape=True)


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
        **app.contract.template_variables(),
    }


def render_ebuild(variables: dict) -> str:
    """The ebuild text, every value quoted, checked by ``bash -n``."""
    try:
        text = _ebuild_environment().get_template("ebuild.j2").render(**variables)
    except jinja2.TemplateError as exc:
        raise BuildError(f"ebuild template ebuild.j2: {exc}") from None
    check_bash_syntax(text)
    return text


def render_metadata(variables: dict) -> str:
    try:
        return _xml_environment().get_template("metadata.xml.j2").render(**variables)
    except jinja2.TemplateError as exc:
        raise BuildError(f"template metadata.xml.j2: {exc}") from None


def check_bash_syntax(text: str) -> None:
    """``bash -n``: the rendered ebuild parses (cheap; it runs nothing)."""
    result = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True,
                            timeout=30)
    if result.returncode != 0:
        raise BuildError(f"the rendered ebuild is not valid bash: {last_line(result.stderr)}")
