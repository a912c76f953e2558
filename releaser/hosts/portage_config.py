"""A host's Portage configuration: the files a node's Portage reads, rendered.

Every way releaser runs Portage needs them, whatever the host; pointing this
machine's Portage at a local root (its prefix, its environment) is apart, in
``releaser.hosts.local_root``.

1. **The configuration files** a node's Portage reads: ``make.conf``,
   ``repos.conf/releaser.conf``, ``binrepos.conf``, ``profile/package.provided``.
   ``config_files(spec)`` renders them, keyed by their path under the root.
   The ``render_*`` functions are pure and take one ``NodeRootSpec`` whose
   root and paths are parameters: the bootstrap of a real host or a Vagrant
   box writes the same files with ``root=Path("/")``.

Inside such a root::

    ROOT/etc/portage/make.conf                 render_make_conf
    ROOT/etc/portage/make.profile           -> the overlay's profile
    ROOT/etc/portage/repos.conf/releaser.conf  render_repos_conf
    ROOT/etc/portage/binrepos.conf             render_binrepos_conf (binhost only)
    ROOT/etc/portage/profile/package.provided  render_package_provided

What releaser owns on a host, and what the host's own
-----------------------------------------------------
Two parts of that configuration are releaser's, whatever the host: the
environment's overlay (``render_repo_file``: one ``repos.conf/<overlay>.conf``
section) and the make.conf settings its backups and rollbacks need
(``render_releaser_make_conf``: DISTDIR, PKGDIR, BINPKG_FORMAT).
``releaser host bootstrap`` (releaser.hosts.bootstrap) writes exactly these
two, as files of their own, on any host.  The rest (FEATURES for a Portage
without its ``portage`` user, curl as fetch command, the main repository,
the profile, package.provided) is the *host's* (``host_config_files``): a
Gentoo host has its own, and a local root is given this machine's by
whoever lays it out (the sandbox, as a host's installer would).
``config_files`` is both parts in one, for a throw-away local root that is
never bootstrapped (the build's manifest root, unit tests).

What a *node* holds besides (the vdb, distfiles, binary packages, a service
manager) is state of the host, not configuration: the sandbox lays it out for
its fake nodes (releaser.sandbox.noderoot), a real host has it already.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from releaser.errors import UsageError

#: Where the configuration lives inside a root.
ETC_PORTAGE = Path("etc/portage")

#: FEATURES of a Portage that runs as a user of a machine without Gentoo's
#: ``portage`` user or sandbox binary (releaser's own venv Portage): the first
#: six turn off what needs them, and the news reader.  The last gives one
#: binary package file per version (PKGDIR/<category>/<PF>.gpkg.tar, not
#: Portage's default <category>/<PN>/<PF>-<N>.gpkg.tar), which keeps a local
#: PKGDIR easy to read.  releaser never relies on it: it asks Portage where a
#: package is (``bintree.binpkg_paths``), and
#: ``NodeRootSpec(stock_binpkgs=True)`` leaves Portage's default, as on a
#: stock Gentoo host (pitfall 7).  A Gentoo host with its ``portage`` user
#: passes its own ``features``.
DEFAULT_FEATURES = (
    "-sandbox", "-usersandbox", "-userpriv", "-usersync", "-userfetch", "-news",
    "-binpkg-multi-instance",
)

#: Where Portage keeps distfiles and binary packages on a Gentoo host (its defaults,
#: and ``[hosts] distdir``/``pkgdir`` of releaser.toml when not set).
DISTDIR = "/var/cache/distfiles"
PKGDIR = "/var/cache/binpkgs"
#: Where a host keeps its repositories (Gentoo's default): ``/var/db/repos/NAME``.
REPOS_DIR = "/var/db/repos"

#: curl instead of Portage's default wget (absent on many machines).
#: ``--fail`` makes an HTTP 404 a failed fetch instead of a saved error page,
#: ``--location`` follows redirects, ``--continue-at -`` resumes.  Portage
#: substitutes ${DISTDIR}, ${FILE} and ${URI} itself.
FETCHCOMMAND = ('curl --fail --silent --show-error --location --retry 3 '
                '--connect-timeout 60 -o "${DISTDIR}/${FILE}" "${URI}"')
RESUMECOMMAND = ('curl --fail --silent --show-error --location --retry 3 '
                 '--connect-timeout 60 --continue-at - -o "${DISTDIR}/${FILE}" "${URI}"')


@dataclass(frozen=True)
class RepoSpec:
    """One overlay a node knows (a ``repos.conf`` section).

    ``location`` defaults to ``<root>/var/db/repos/<name>``.  With
    ``sync_type="git"`` Portage clones ``sync_uri`` there on the first
    ``emaint sync`` and pulls afterwards; with None the location is used as is.

    ``openpgp_key``: the path (as Portage on the host opens it) of the file
    holding only the environment's release key(s) (``releaser.trust``).  A
    key path makes Portage refuse any synced commit not signed by that key
    (``sync-git-verify-commit-signature``, ``sync-openpgp-key-path``),
    and keeps the whole history (``clone-depth``/``sync-depth`` 0) for
    releaser's ancestry and age checks (``releaser.trust.ancestry``).  Keys
    are never refreshed from keyservers: release keys are on none, and a new
    one arrives with host bootstrap.  None writes the settings as a comment.
    """

    name: str
    location: Path | None = None
    sync_type: str | None = None
    sync_uri: str | None = None
    openpgp_key: str | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "repository")
        if self.sync_type not in (None, "git"):
            raise UsageError(f"repository {self.name}: unsupported sync-type {self.sync_type!r}")
        if self.sync_type and not self.sync_uri:
            raise UsageError(f"repository {self.name}: sync-type {self.sync_type} needs a sync-uri")
        for value in (self.sync_uri, self.openpgp_key):
            if value is not None and (not value or any(c.isspace() for c in value)):
                raise UsageError(f"repository {self.name}: {value!r} cannot be a repos.conf "
                                 "value (empty, or with blanks)")
        if self.openpgp_key is not None and not self.openpgp_key.startswith("/"):
            raise UsageError(f"repository {self.name}: the OpenPGP key must be an absolute "
                             f"path, not {self.openpgp_key!r}")

    def location_in(self, root: Path) -> Path:
        return Path(self.location) if self.location else under_root(root, REPOS_DIR) / self.name


@dataclass(frozen=True)
class ProfileSpec:
    """The profile a node's ``make.profile`` points to: ``<repo>/profiles/<path>``."""

    repo: str
    path: str = "releaser/amd64"


@dataclass(frozen=True)
class BinhostSpec:
    """A binary-package host (a ``binrepos.conf`` section).

    ``location`` is where Portage keeps its local copy of the binhost's
    Packages index; it must be explicit or Portage writes to the real
    ``/var/cache/binhost``.  Defaults to ``<root>/var/cache/binhost/<name>``.
    """

    name: str
    sync_uri: str
    location: Path | None = None
    priority: int | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "binhost")

    def location_in(self, root: Path) -> Path:
        return Path(self.location) if self.location else Path(root) / "var/cache/binhost" / self.name


@dataclass
class NodeRootSpec:
    """Everything Portage's configuration says about a node whose ``/`` is ``root``.

    ``provided``: ``cat/pkg-ver`` entries for ``package.provided``, the
    dependencies the standalone overlay cannot satisfy (python, flask...), so
    real RDEPEND lines still resolve.  ``extra_make_conf``: lines appended to
    make.conf verbatim (after the ones releaser writes, so they win).
    ``stock_binpkgs``: leave binary packages as a stock Gentoo host has them
    (``binpkg-multi-instance`` on: ``PKGDIR/CAT/PN/PF-N.gpkg.tar``, one more
    file per quickpkg) by dropping any ``binpkg-multi-instance`` setting from
    ``features``.
    """

    root: Path
    repos: list[RepoSpec]
    profile: ProfileSpec
    accept_license: str = "*"
    provided: list[str] = field(default_factory=list)
    features: tuple[str, ...] = DEFAULT_FEATURES
    gentoo_mirrors: str = ""
    fetchcommand: str = FETCHCOMMAND
    resumecommand: str = RESUMECOMMAND
    binpkg_format: str = "gpkg"
    binhost: BinhostSpec | None = None
    extra_make_conf: list[str] = field(default_factory=list)
    stock_binpkgs: bool = False

    def __post_init__(self) -> None:
        self.root = Path(self.root).absolute()
        if self.stock_binpkgs:
            self.features = tuple(f for f in self.features
                                  if f.lstrip("-") != "binpkg-multi-instance")
        names = [r.name for r in self.repos]
        if len(set(names)) != len(names):
            raise UsageError(f"duplicate repository names: {names}")
        if self.profile.repo not in names:
            raise UsageError(f"profile repository {self.profile.repo!r} is not among {names}")

    def repo(self, name: str) -> RepoSpec:
        for repo in self.repos:
            if repo.name == name:
                return repo
        raise KeyError(name)

    @property
    def distdir(self) -> Path:
        return self.releaser_make_conf.distdir_path

    @property
    def pkgdir(self) -> Path:
        return self.releaser_make_conf.pkgdir_path

    @property
    def releaser_make_conf(self) -> "ReleaserMakeConf":
        """releaser's own make.conf settings for this root (Gentoo's default places)."""
        return ReleaserMakeConf(self.root, binpkg_format=self.binpkg_format)

    @property
    def tmpdir(self) -> Path:
        return self.root / "var/tmp"

    @property
    def vdb(self) -> Path:
        return self.root / "var/db/pkg"


@dataclass(frozen=True)
class ReleaserMakeConf:
    """The make.conf settings releaser's backups and rollbacks need, on a host whose ``/`` is ``root``.

    ``distdir``/``pkgdir`` are paths as the host sees them (``/var/cache/...``);
    on a local root they are written under it.  ``features`` is added to the
    host's FEATURES, never replacing them: empty today, the slot of signed
    binary packages (``binpkg-signing``...) for the trust issue.
    GENTOO_MIRRORS is left to the host: releaser's ebuilds say
    ``RESTRICT="mirror"``, so Portage fetches their distfiles from SRC_URI
    (the central repository's distfiles URL) and never from a Gentoo mirror.
    """

    root: Path
    distdir: str = DISTDIR
    pkgdir: str = PKGDIR
    binpkg_format: str = "gpkg"
    features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("distdir", "pkgdir"):
            value = getattr(self, name)
            if not value.startswith("/") or any(c.isspace() or c in '"\\$`' for c in value):
                raise UsageError(f"{name} must be an absolute path of plain characters: "
                                 f"{value!r}")
        if self.binpkg_format not in ("gpkg", "xpak"):
            raise UsageError(f"unknown BINPKG_FORMAT {self.binpkg_format!r} (gpkg or xpak)")
        for feature in self.features:
            if not feature or not all(c.isalnum() or c in "-_" for c in feature):
                raise UsageError(f"not a Portage FEATURES word: {feature!r}")

    @property
    def distdir_path(self) -> Path:
        return under_root(self.root, self.distdir)

    @property
    def pkgdir_path(self) -> Path:
        return under_root(self.root, self.pkgdir)


def under_root(root: Path | str, path: str) -> Path:
    """``path`` (absolute, as the host sees it) inside a host whose ``/`` is ``root``."""
    return Path(root) / path.lstrip("/")


def _check_name(name: str, what: str) -> None:
    # Names end up in file names and ini section headers.
    if not name or not all(c.isalnum() or c in "-_" for c in name) or name[0] == "-":
        raise UsageError(f"invalid {what} name: {name!r}")


def _quote(value: str) -> str:
    """A make.conf double-quoted value (bash syntax)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


_HEADER = "# Written by releaser (releaser.hosts.portage_config)"


def render_make_conf(spec: NodeRootSpec) -> str:
    """The whole ``etc/portage/make.conf`` of a local root nobody bootstraps: the host's
    settings (``render_host_make_conf``), then releaser's (``releaser_make_conf_lines``),
    then the extra lines (so they win)."""
    return (render_host_make_conf(spec, extra=False)
            + "\n".join(releaser_make_conf_lines(spec.releaser_make_conf)) + "\n"
            + _extra_lines(spec))


def render_host_make_conf(spec: NodeRootSpec, *, extra: bool = True) -> str:
    """The host's own ``etc/portage/make.conf`` for this machine's Portage on a local root.

    What a Portage without Gentoo's ``portage`` user, sandbox binary and wget
    needs, and no Gentoo mirror (no internet): the part of make.conf that a
    Gentoo host has of its own.  Every value is double-quoted with ``\\``,
    ``"`` and ``$`` escaped, so the ``${DISTDIR}``/``${FILE}``/``${URI}`` of
    FETCHCOMMAND stay literal in the file (``\\${URI}``) and Portage
    substitutes them per fetch; unescaped, Portage's make.conf parser would
    expand them (to nothing) at load time.
    """
    lines = [
        f"{_HEADER}: this host's own settings.",
        f"FEATURES={_quote(' '.join(spec.features))}",
        f"ACCEPT_LICENSE={_quote(spec.accept_license)}",
        f"PORTAGE_TMPDIR={_quote(str(spec.tmpdir))}",
        'CLEAN_DELAY="0"',
        'EMERGE_WARNING_DELAY="0"',
        'PORTAGE_USERNAME="root"',
        'PORTAGE_GRPNAME="root"',
        "# No Gentoo mirrors: distfiles come only from the SRC_URI of our ebuilds.",
        f"GENTOO_MIRRORS={_quote(spec.gentoo_mirrors)}",
        f"FETCHCOMMAND={_quote(spec.fetchcommand)}",
        f"RESUMECOMMAND={_quote(spec.resumecommand)}",
    ]
    return "\n".join(lines) + "\n" + (_extra_lines(spec) if extra else "")


def _extra_lines(spec: NodeRootSpec) -> str:
    if not spec.extra_make_conf:
        return ""
    return "\n".join(["# Extra lines from the environment's configuration.",
                      *spec.extra_make_conf]) + "\n"


def releaser_make_conf_lines(conf: ReleaserMakeConf) -> list[str]:
    """releaser's make.conf settings (see ``ReleaserMakeConf``), as lines."""
    lines = [
        "# Where releaser's backups (quickpkg) and rollbacks (emerge --usepkgonly) find",
        "# binary packages, and where the app's distfiles go.",
        f"DISTDIR={_quote(str(conf.distdir_path))}",
        f"PKGDIR={_quote(str(conf.pkgdir_path))}",
        f"BINPKG_FORMAT={_quote(conf.binpkg_format)}",
    ]
    if conf.features:
        # Added to the host's FEATURES (words checked by ReleaserMakeConf), never replacing them.
        lines.append(f'FEATURES="${{FEATURES}} {" ".join(conf.features)}"')
    else:
        lines.append("# Signed binary packages (FEATURES binpkg-signing, binpkg-request-signature)")
        lines.append("# come with the trust issue; releaser adds no FEATURES yet.")
    return lines


def render_releaser_make_conf(conf: ReleaserMakeConf) -> str:
    """The file releaser owns in a host's make.conf directory (``make.conf/90-releaser.conf``).

    GENTOO_MIRRORS is not set: releaser's ebuilds say ``RESTRICT="mirror"``.
    """
    return "\n".join([f"{_HEADER}: releaser host bootstrap rewrites this file;",
                      "# the host's own settings go in the other files of this folder.",
                      "# Distfiles of releaser's ebuilds come from their SRC_URI (RESTRICT=mirror):",
                      "# GENTOO_MIRRORS is left as the host has it.",
                      *releaser_make_conf_lines(conf)]) + "\n"


def render_repos_conf(spec: NodeRootSpec) -> str:
    """The ``etc/portage/repos.conf/releaser.conf`` of a local root nobody bootstraps."""
    out = [f"{_HEADER}.", *render_main_repo(spec.profile.repo)]
    for repo in spec.repos:
        out += repo_section(repo, spec.root) + [""]
    return "\n".join(out)


def render_main_repo(name: str) -> list[str]:
    """A ``[DEFAULT] main-repo`` section: the host's main repository (``gentoo`` on a
    Gentoo host; a standalone overlay on a local root).  Portage cannot merge
    anything without one (KeyError: PORTDIR)."""
    _check_name(name, "repository")
    return ["[DEFAULT]", f"main-repo = {name}", ""]


def repo_section(repo: RepoSpec, root: Path) -> list[str]:
    """One repository's ``repos.conf`` section, its signing slot included."""
    out = [f"[{repo.name}]", f"location = {repo.location_in(root)}"]
    if repo.sync_type:
        out += [f"sync-type = {repo.sync_type}", f"sync-uri = {repo.sync_uri}",
                "auto-sync = yes"]
        if repo.openpgp_key:
            out += ["sync-git-verify-commit-signature = yes",
                    f"sync-openpgp-key-path = {repo.openpgp_key}",
                    "sync-openpgp-key-refresh = false-nowarn",
                    "clone-depth = 0", "sync-depth = 0"]
        else:
            out += ["# Signed overlay commits (the trust issue): RepoSpec.openpgp_key writes",
                    "# sync-git-verify-commit-signature = yes",
                    "# sync-openpgp-key-path = /path/to/the/signing/key.asc"]
    return out


def render_repo_file(repo: RepoSpec, root: Path) -> str:
    """The file releaser owns in a host's repos.conf directory: ``repos.conf/<overlay>.conf``."""
    return "\n".join([f"{_HEADER}: releaser host bootstrap rewrites this file.",
                      *repo_section(repo, root)]) + "\n"


def render_binrepos_conf(spec: NodeRootSpec) -> str | None:
    """The node's ``etc/portage/binrepos.conf``, or None without a binhost."""
    host = spec.binhost
    if host is None:
        return None
    return render_binrepo_file(host, spec.root, f"{_HEADER}.")


def render_binrepo_file(host: BinhostSpec, root: Path,
                        header: str = f"{_HEADER}: releaser host bootstrap rewrites this file.") -> str:
    """One binhost's ``binrepos.conf`` section (a whole file of ``binrepos.conf/``)."""
    if any(c.isspace() for c in host.sync_uri) or not host.sync_uri:
        raise UsageError(f"binhost {host.name}: {host.sync_uri!r} cannot be a binrepos.conf value")
    out = [header,
           f"[{host.name}]",
           f"sync-uri = {host.sync_uri}",
           f"location = {host.location_in(root)}"]
    if host.priority is not None:
        out.append(f"priority = {host.priority}")
    return "\n".join(out) + "\n"


def render_package_provided(spec: NodeRootSpec) -> str:
    """``etc/portage/profile/package.provided``, after validating every entry."""
    from portage.versions import catpkgsplit

    for entry in spec.provided:
        if catpkgsplit(entry) is None or catpkgsplit(entry)[0] is None or entry.strip() != entry:
            raise UsageError(f"package.provided entry is not cat/pkg-version: {entry!r}")
    return "".join(f"{e}\n" for e in spec.provided)


def config_files(spec: NodeRootSpec) -> dict[Path, str | None]:
    """Every configuration file of a local root nobody bootstraps, by path relative to it.

    None means the file must not exist (no binhost: no ``binrepos.conf``).
    Rendering validates, so a ``UsageError`` here means nothing was written.
    """
    return {ETC_PORTAGE / "make.conf": render_make_conf(spec),
            ETC_PORTAGE / "repos.conf" / "releaser.conf": render_repos_conf(spec),
            ETC_PORTAGE / "profile" / "package.provided": render_package_provided(spec),
            ETC_PORTAGE / "binrepos.conf": render_binrepos_conf(spec)}


def host_config_files(spec: NodeRootSpec) -> dict[Path, str | None]:
    """The configuration a local root has *before* releaser prepares it, as a host has its own.

    make.conf (a file, as on a fresh Gentoo host; the bootstrap makes it a
    directory and adds its own file), the main repository (``repos.conf/host.conf``),
    package.provided (what stands in for installed packages) and binrepos.conf.
    Neither the overlay nor releaser's make.conf settings: those are the
    bootstrap's (``render_repo_file``, ``render_releaser_make_conf``).
    """
    return {ETC_PORTAGE / "make.conf": render_host_make_conf(spec),
            ETC_PORTAGE / "repos.conf" / "host.conf":
                "\n".join([f"{_HEADER}: this host's main repository.",
                           *render_main_repo(spec.profile.repo)]),
            ETC_PORTAGE / "profile" / "package.provided": render_package_provided(spec),
            ETC_PORTAGE / "binrepos.conf": render_binrepos_conf(spec)}


__all__ = [
    "BinhostSpec",
    "DEFAULT_FEATURES",
    "DISTDIR",
    "ETC_PORTAGE",
    "FETCHCOMMAND",
    "NodeRootSpec",
    "PKGDIR",
    "ProfileSpec",
    "REPOS_DIR",
    "RESUMECOMMAND",
    "ReleaserMakeConf",
    "RepoSpec",
    "config_files",
    "host_config_files",
    "releaser_make_conf_lines",
    "render_binrepos_conf",
    "render_binrepo_file",
    "render_host_make_conf",
    "render_main_repo",
    "render_make_conf",
    "render_package_provided",
    "render_releaser_make_conf",
    "render_repo_file",
    "render_repos_conf",
    "repo_section",
    "under_root",
]
