"""releaser: build, publish, promote and roll back releases on fleets of Gentoo hosts."""

__version__ = "0.1.0"
