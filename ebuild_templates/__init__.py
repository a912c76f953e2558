"""Jinja2 templates of the package files releaser renders (package data).

``ebuild.j2`` and ``metadata.xml.j2`` are rendered by ``releaser.build.ebuild``
with these variables (``app_dir``, ``module`` and ``database_env`` come from
the app's contract, ``releaser.appcontract``):

==================  ==============================================================
``name``            package name (PN), e.g. ``notes``
``category``        package category, e.g. ``www-apps``
``description``     one-line DESCRIPTION
``homepage``        HOMEPAGE
``license``         LICENSE, a licence file present in the overlay's ``licenses/``
``distfiles_url``   base URL of the central repository's distfiles; SRC_URI is
                    ``{distfiles_url}/${P}.tar.gz``
``rdepend``         list of runtime dependency atoms (RDEPEND)
``db_path``         the application's database path on a host, e.g.
                    ``/var/lib/notes/notes.db``; pkg_preinst dumps it
``app_dir``         where the app's package is installed, ``/usr/lib/{name}``
``module``          the Python package run as ``python3 -P -m {module}``
``database_env``    the variable the app reads its database path from, e.g.
                    ``NOTES_DATABASE`` (``[app] database_env``)
``year``            copyright year of the header
==================  ==============================================================

Every value printed into ``ebuild.j2`` goes through the ``bash`` filter
(``{{ description | bash }}``), which writes it as one inert double-quoted bash
word; ``{{ url | bash("/${P}.tar.gz") }}`` appends template text inside the
same quotes.  Printing a value without the filter fails the build (only
integers, such as ``year``, pass bare).  ``metadata.xml.j2`` is autoescaped
for XML.

The ebuild does not mention its own version: the same text serves every
version, so promoting to production copies it byte for byte.
"""
