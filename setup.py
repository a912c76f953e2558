"""Packaging for releaser.

``ebuild_templates/`` and ``overlays/`` live at the top of the repository (where
operators look for them) and are shipped as package data of
``releaser.ebuild_templates`` and ``releaser.overlays``, loaded with
importlib.resources.

Flask and waitress are the app's dependencies (``app/``), not the tool's: the
``sandbox`` extra brings them for ``releaser sandbox``/``releaser demo``, which
run the app on their node roots with this Python and declare the installed
versions to Portage (package.provided).
"""

from setuptools import find_packages, setup

setup(
    name="releaser",
    version="0.1.0",
    description="Package-and-release tool for fleets of Gentoo hosts",
    python_requires=">=3.11",
    packages=[*find_packages(include=["releaser", "releaser.*"]), "releaser.ebuild_templates",
              "releaser.overlays"],
    package_dir={
        "releaser": "releaser",
        "releaser.ebuild_templates": "ebuild_templates",
        "releaser.overlays": "overlays",
    },
    package_data={
        "releaser.ebuild_templates": ["*.j2", "**/*"],
        "releaser.overlays": ["**/*"],
    },
    include_package_data=True,
    install_requires=[
        "click>=8.1,<9",
        "fabric>=3.2,<4",
        "paramiko>=3.4",
        "jinja2>=3.1,<4",
        "GitPython>=3.1.40,<4",
        "python-gnupg>=0.4.4",
        # Portage verifies a signed overlay against a key file only with gemato
        # (repos.conf sync-openpgp-key-path); the sandbox's nodes use this Portage.
        "gemato>=14.5",
        "portage>=3.0.60",
    ],
    extras_require={
        "sandbox": [
            "flask>=3.0,<4",
            "waitress>=3.0,<4",
            # the app's drivers for PostgreSQL and MariaDB (app/notes/db.py)
            "psycopg[binary]>=3.1,<4",
            "PyMySQL>=1.1,<2",
        ],
        # releaser gate: Gentoo's QA on the generated ebuild (releaser.gate.pkgcheck)
        "gate": [
            "pkgcheck==0.10.37",
            "pkgcore==0.12.30",
        ],
        "test": [
            "pytest>=8",
            "wheel",  # tests/test_architecture.py builds releaser offline (pip install .)
            "pkgcheck==0.10.37",
            "pkgcore==0.12.30",
            "pkgdev==0.2.13",
            # tests/test_ci_files.py parses the GitHub Actions workflow and the Jenkinsfile
            "PyYAML>=6,<7",
            "groovy-parser==0.2.2",
        ],
    },
    entry_points={"console_scripts": ["releaser = releaser.cli:main"]},
)
