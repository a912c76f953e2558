"""Portage's commands, driven through a Runner: emerge, ebuild, quickpkg, emaint, portageq.

Every function builds an argv list and runs it with the given
``releaser.hosts.runner.Runner``, so the same call drives a sandbox node
(``LocalRunner(env=noderoot.portage_env(NODE))``) and a real host over SSH.
Nothing here prints; failures raise.

Safety: every package atom, version and repository name is checked with
Portage's own parser (``portage.dep.Atom``, ``portage.versions``) *before* a
command is built, and anything that is not exactly a ``cat/pkg-ver`` (or
``cat/pkg``) is refused with ``UsageError``: an argument carrying shell
metacharacters, options (``--foo``) or extra atom syntax never reaches a host.

Failures: Portage prints the useful part of a failure in a few recognisable
places (the ``ERROR: cat/pkg-ver::repo failed (install phase):`` block and
its die message, ``!!! Fetched file: ... VERIFY FAILED!``, ``emerge: there
are no ebuilds to satisfy ...``, git's ``fatal:``...).  ``PortageError``
(a ``NodeError``) carries the one line that says what went wrong as its
message and the other relevant lines in ``details``.

Trust the vdb, not exit codes: a package whose ``pkg_postinst`` dies is already
recorded as installed while emerge exits non-zero (``PortageError.phase ==
"postinst"``).  Ask ``installed_version`` what is really installed.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from portage.dep import Atom, isvalidatom
from portage.exception import InvalidAtom
from portage.util import cmp_sort_key
from portage.versions import catpkgsplit, vercmp

from releaser.errors import PortageError, UsageError, last_line
from releaser.hosts.runner import CommandResult, Runner

#: Options every emerge call carries: never ask (a host's EMERGE_DEFAULT_OPTS
#: may say --ask, which would wait forever on a closed stdin), no colour codes.
EMERGE_BASE = ("emerge", "--ask=n", "--color=n")

#: A repository name (PMS 3.1.5 style; also a valid repos.conf section).
_REPO_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_+-]*$")
#: Terminal colour and cursor escape sequences (ebuild output keeps them even
#: with --color=n).
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class FailureReport:
    """What ``explain_failure`` found in a failed command's output."""

    summary: str
    details: list[str] = field(default_factory=list)
    phase: str | None = None
    log_path: str | None = None


_PHASE_ERROR = re.compile(r"ERROR: (\S+) failed \((\w+) phase\):")
_DIE_LINE = re.compile(r"^\s*\*\s{2,}(\S.*)$")
_VERIFY_FAILED = re.compile(r"!!! Fetched file: (\S+) VERIFY FAILED!")
_REASON = re.compile(r"!!! Reason: (.+)")
_COULDNT_DOWNLOAD = re.compile(r"!!! Couldn't download '([^']+)'")
_LOG_PATH = re.compile(r"(?:The complete build log is located at|Log file:)\s*'?([^']*)'?")
_QUOTED_LOG = re.compile(r"^>>>\s+'([^']+\.log)'")
#: Lines worth keeping in ``details``, in order of appearance.
_INTERESTING = re.compile(
    r"^(!!! |emerge: |fatal: |error: |curl: |\(dependency required by|- \S+ \(masked by|"
    r"Could not find anything|No packages found|--- Couldn't find|Action: sync for repo|"
    r"The specified repo|>>> No packages selected|ERROR: )"
)
#: Summary patterns tried in order when there is no phase error or fetch failure.
_SUMMARY_PATTERNS = [
    re.compile(r"^emerge: there are no (ebuilds|binary packages) .*"),
    re.compile(r"^!!! All ebuilds that could satisfy .*"),
    re.compile(r"^!!! Multiple package instances within a single package slot .*"),
    re.compile(r"^!!! The following update has been skipped .*"),
    re.compile(r"^fatal: .*"),
    re.compile(r"^--- Couldn't find .*"),
    re.compile(r"^Could not find anything to match .*"),
    re.compile(r"^The specified repo\(s\) were not found.*"),
    re.compile(r"^>>> No packages selected for removal.*"),
    re.compile(r"^!!! .*"),
]


def _clean_lines(text: str) -> list[str]:
    return [_ANSI.sub("", line).rstrip() for line in text.splitlines()]


def explain_failure(stdout: str, stderr: str) -> FailureReport:
    """Find Portage's own account of a failure in a command's output.

    Order of preference: an ebuild phase error with its die message; a
    distfile digest failure; a distfile that could not be downloaded (with
    the fetch command's error); dependency/masking messages; git's
    ``fatal:``; any ``!!!`` line; the last line of output.
    """
    lines = _clean_lines(stdout) + _clean_lines(stderr)
    stripped = [re.sub(r"^\s*\*\s?", "", l).strip() if l.lstrip().startswith("*") else l.strip()
                for l in lines]

    details: list[str] = []

    def keep(line: str) -> None:
        if line and line not in details:
            details.append(line)

    log_path = None
    for line in stripped:
        m = _LOG_PATH.search(line) or _QUOTED_LOG.match(line)
        if m and m.group(1):
            log_path = m.group(1)
            break

    # 1. An ebuild phase died: "ERROR: cat/pkg-1.0::repo failed (install phase):"
    #    followed by the die message as " *   message" lines.
    for i, line in enumerate(lines):
        m = _PHASE_ERROR.search(line)
        if not m:
            continue
        message = []
        for follow in lines[i + 1:]:
            d = _DIE_LINE.match(follow)
            if not d or d.group(1).startswith("Call stack"):
                break
            message.append(d.group(1).strip())
        keep(stripped[i])
        for msg in message:
            keep(msg)
        for line2 in stripped:
            if _INTERESTING.match(line2):
                keep(line2)
        summary = f"{m.group(1)} failed ({m.group(2)} phase)"
        if message:
            summary += ": " + " ".join(message)
        return FailureReport(summary, details, m.group(2), log_path)

    for line in stripped:
        if _INTERESTING.match(line):
            keep(line)
        elif line.startswith("!!! Got:") or line.startswith("!!! Expected:"):
            keep(line)

    # 2. A distfile came with the wrong bytes.
    for i, line in enumerate(stripped):
        m = _VERIFY_FAILED.search(line)
        if m:
            reason = next((r.group(1) for r in map(_REASON.match, stripped[i + 1:i + 3]) if r),
                          "checksum mismatch")
            return FailureReport(f"{m.group(1)}: digest verification failed against the "
                                 f"Manifest ({reason})", details, "fetch", log_path)

    # 3. A distfile could not be downloaded at all; the fetch command said why.
    for i, line in enumerate(stripped):
        m = _COULDNT_DOWNLOAD.search(line)
        if m:
            why = next((l for l in reversed(stripped[:i]) if l.startswith(("curl:", "wget:"))), None)
            summary = f"could not download {m.group(1)}"
            if why:
                summary += f" ({why})"
            return FailureReport(summary, details, "fetch", log_path)

    # 4. Everything else Portage words itself.
    for pattern in _SUMMARY_PATTERNS:
        for line in stripped:
            if pattern.match(line):
                return FailureReport(line.removeprefix("!!! "), details, None, log_path)

    summary = last_line("\n".join(_clean_lines(stderr)), "\n".join(_clean_lines(stdout)))
    return FailureReport(summary, details, None, log_path)


def _run(runner: Runner, argv: list[str], *, env=None, timeout=None) -> CommandResult:
    """Run argv; on a non-zero exit raise PortageError with Portage's explanation."""
    result = runner.run(argv, check=False, env=env, timeout=timeout)
    if result.returncode != 0:
        report = explain_failure(result.stdout, result.stderr)
        raise PortageError(result, getattr(runner, "host", "?"), report.summary,
                           report.details, report.phase, report.log_path)
    return result


# ----------------------------------------------------------------------- validation


def validate_cpv(cpv: str) -> str:
    """Return ``cpv`` if it is exactly ``category/package-version[-rN]``, else raise UsageError."""
    if not isinstance(cpv, str) or not cpv or cpv.startswith(("-", "=")):
        raise UsageError(f"not a package version (category/name-version): {cpv!r}")
    try:
        atom = Atom("=" + cpv)
    except InvalidAtom:
        raise UsageError(f"not a package version (category/name-version): {cpv!r}") from None
    split = catpkgsplit(cpv)
    if (split is None or split[0] is None or atom.cpv != cpv or str(atom) != "=" + cpv
            or not isvalidatom("=" + cpv)):
        raise UsageError(f"not a package version (category/name-version): {cpv!r}")
    return cpv


def validate_cp(cp: str) -> str:
    """Return ``cp`` if it is exactly ``category/package``, else raise UsageError."""
    if not isinstance(cp, str) or not cp or cp.startswith("-"):
        raise UsageError(f"not a package name (category/name): {cp!r}")
    try:
        atom = Atom(cp)
    except InvalidAtom:
        raise UsageError(f"not a package name (category/name): {cp!r}") from None
    if atom.cp != cp or str(atom) != cp or atom.operator is not None:
        raise UsageError(f"not a package name (category/name): {cp!r}")
    return cp


def validate_repo(repo: str) -> str:
    """Return ``repo`` if it is a valid repository name, else raise UsageError."""
    if not isinstance(repo, str) or not _REPO_NAME.match(repo):
        raise UsageError(f"not a repository name: {repo!r}")
    return repo


def _validate_host_path(path: str | PurePosixPath, what: str) -> str:
    text = str(path)
    if not text.startswith("/") or any(c in text for c in "\0\n"):
        raise UsageError(f"{what} must be an absolute path: {text!r}")
    return text


# ------------------------------------------------------------------------- commands


def manifest(runner: Runner, ebuild_path: str | Path, *, distdir: str | Path | None = None,
             timeout: float | None = None) -> PurePosixPath:
    """Write the package's ``Manifest`` with ``ebuild <path> manifest``; return its path.

    The distfiles are looked up (and, if missing, fetched through SRC_URI) in
    ``distdir`` when given, else in the DISTDIR of the runner's Portage
    configuration.  The runner needs a Portage configuration (a node root, or
    a Gentoo host); the overlay need not be in its repos.conf.
    """
    path = _validate_host_path(ebuild_path, "ebuild path")
    pure = PurePosixPath(path)
    category = pure.parent.parent.name
    if pure.suffix != ".ebuild" or catpkgsplit(f"{category}/{pure.stem}") is None:
        raise UsageError(f"not an ebuild file (CATEGORY/PN/PN-PV.ebuild): {path!r}")
    validate_cpv(f"{category}/{pure.stem}")
    env = {"DISTDIR": _validate_host_path(distdir, "DISTDIR")} if distdir is not None else None
    _run(runner, ["ebuild", path, "manifest"], env=env, timeout=timeout)
    return pure.parent / "Manifest"


def package(runner: Runner, ebuild_path: str | Path, *,
            timeout: float | None = None) -> CommandResult:
    """Build the binary package of an ebuild into PKGDIR (``ebuild <path> package``).

    Portage unpacks, compiles and installs into an image, then packs it and
    records it in PKGDIR's ``Packages`` index: what a binhost serves.
    """
    path = _validate_host_path(ebuild_path, "ebuild path")
    pure = PurePosixPath(path)
    if pure.suffix != ".ebuild":
        raise UsageError(f"not an ebuild file (CATEGORY/PN/PN-PV.ebuild): {path!r}")
    validate_cpv(f"{pure.parent.parent.name}/{pure.stem}")
    return _run(runner, ["ebuild", path, "package"], timeout=timeout)


def sync(runner: Runner, repo: str, *, timeout: float | None = None) -> CommandResult:
    """Sync one repository the way its repos.conf says (``emaint sync -r REPO``)."""
    return _run(runner, ["emaint", "sync", "-r", validate_repo(repo)], timeout=timeout)


@dataclass(frozen=True)
class EmergeResult:
    """A finished, successful emerge of one package version."""

    cpv: str
    binary: bool
    result: CommandResult

    @property
    def seconds(self) -> float:
        return self.result.seconds


def emerge_argv(cpv: str, *, oneshot: bool = True, usepkgonly: bool = False,
                getbinpkg: bool = False, nodeps: bool = False,
                getbinpkgonly: bool = False) -> list[str]:
    """The emerge argv for exactly ``=cpv`` (validated)."""
    argv = list(EMERGE_BASE)
    if oneshot:
        argv.append("--oneshot")
    if getbinpkgonly:
        argv.append("--getbinpkgonly")
    if usepkgonly:
        argv.append("--usepkgonly")
    if getbinpkg:
        argv.append("--getbinpkg")
    if nodeps:
        argv.append("--nodeps")
    argv.append("=" + validate_cpv(cpv))
    return argv


def emerge(runner: Runner, cpv: str, *, oneshot: bool = True, usepkgonly: bool = False,
           getbinpkg: bool = False, nodeps: bool = False, getbinpkgonly: bool = False,
           timeout: float | None = None) -> EmergeResult:
    """Install exactly ``cpv`` (``emerge =cat/pkg-ver``).

    ``oneshot`` keeps it out of the world file (note: ``emerge --depclean``
    would then consider it removable).  ``usepkgonly`` installs only from a
    binary package (PKGDIR, or the binhost with ``getbinpkg``): the rollback
    path.  ``getbinpkgonly`` installs only the binhost's package (binhost mode).  Raises PortageError (a NodeError) with Portage's reason on failure;
    when ``error.phase == "postinst"`` the package *is* installed.
    """
    argv = emerge_argv(cpv, oneshot=oneshot, usepkgonly=usepkgonly,
                       getbinpkg=getbinpkg, nodeps=nodeps, getbinpkgonly=getbinpkgonly)
    result = _run(runner, argv, timeout=timeout)
    binary = ">>> Emerging binary" in result.stdout
    return EmergeResult(cpv, binary, result)


def unmerge(runner: Runner, cpv: str, *, timeout: float | None = None) -> CommandResult:
    """Remove exactly ``cpv`` (``emerge --unmerge =cat/pkg-ver``).

    Modified CONFIG_PROTECTed files (``/etc``) stay behind, as on any Gentoo host.
    """
    argv = [*EMERGE_BASE, "--unmerge", "=" + validate_cpv(cpv)]
    return _run(runner, argv, timeout=timeout)


def installed_version(runner: Runner, root: str | PurePosixPath, cp: str) -> str | None:
    """The installed version (``PVR``) of ``cp``, read from the vdb, or None.

    ``root`` is the node's ROOT: ``/`` on a real host, the node directory in
    the sandbox.  It must be given explicitly because ``portageq`` replaces
    the ROOT of its environment with this argument: ``/`` in the sandbox would
    silently read the real machine's (absent) /var/db/pkg and answer "not
    installed" with exit status 0.
    """
    cp = validate_cp(cp)
    category, name = cp.split("/")
    folder = posixpath.join(_validate_host_path(root, "root"), VDB, category)
    # One `ls` of the vdb's category folder, judged here with Portage's version
    # rules: what `portageq best_version` answers, without starting Portage on the
    # node (~0.4 s a call).  `-MERGING-*` is a merge under way, not installed.
    listing = runner.run(["ls", "-1", "--", folder], check=False)
    if listing.returncode != 0 and "No such file" not in listing.stderr:
        raise PortageError(listing, getattr(runner, "host", "?"),
                           f"cannot read the installed-package database {folder}: "
                           f"{last_line(listing.stderr)}")
    versions = [v for v in (_vdb_version(entry, category, name)
                            for entry in listing.stdout.split()) if v]
    return max(versions, key=cmp_sort_key(vercmp)) if versions else None


#: The installed-package database under a host's ROOT.
VDB = "var/db/pkg"


def _vdb_version(entry: str, category: str, name: str) -> str | None:
    """The version (PVR) a vdb folder name holds for package ``name``, or None."""
    split = catpkgsplit(f"{category}/{entry}") if not entry.startswith("-") else None
    if split is None or split[1] != name:
        return None
    return entry[len(name) + 1:]


def quickpkg(runner: Runner, cpv: str, *, include_config: bool = True,
             timeout: float | None = None,
             before: list[PurePosixPath] | None = None) -> PurePosixPath:
    """Make a binary package of the installed ``cpv``; return its path on the host.

    ``include_config`` (default) packs the real contents of CONFIG_PROTECTed
    files (``/etc``); without it quickpkg stores empty placeholders, and a
    rollback from that package would wipe the node's configuration.
    The path is the one Portage's PKGDIR index gives the new package:
    ``PKGDIR/CAT/PF.gpkg.tar`` with ``FEATURES=-binpkg-multi-instance``,
    a new ``PKGDIR/CAT/PN/PF-N.gpkg.tar`` on a stock host.  ``before``: the
    ``binpkg_paths`` of ``cpv`` the caller has just read (else read here).
    """
    from releaser.hosts.bintree import binpkg_paths  # bintree builds on this module

    cpv = validate_cpv(cpv)
    before = set(binpkg_paths(runner, cpv) if before is None else map(PurePosixPath, before))
    argv = ["quickpkg", f"--include-config={'y' if include_config else 'n'}", "=" + cpv]
    result = _run(runner, argv, timeout=timeout)
    text = "\n".join(_clean_lines(result.stdout + "\n" + result.stderr))
    if "No packages found" in text or "Could not find anything to match" in text:
        report = explain_failure(result.stdout, result.stderr)
        raise PortageError(result, getattr(runner, "host", "?"), report.summary, report.details)
    after = binpkg_paths(runner, cpv)
    new = [p for p in after if p not in before]
    if len(new) == 1:
        return new[0]  # a new instance (binpkg-multi-instance)
    if not new and len(after) == 1:
        return after[0]  # one file per version, replaced in place
    raise PortageError(result, getattr(runner, "host", "?"),
                       f"quickpkg of {cpv} left no package Portage's index can tell apart "
                       f"(before: {sorted(map(str, before))}, after: {list(map(str, after))})")


def binpkg_path(runner: Runner, root: str | PurePosixPath, cpv: str) -> PurePosixPath | None:
    """Where Portage's binary-package index says ``cpv``'s package is, or None.

    With several packages of ``cpv`` (binpkg-multi-instance), the one a plain
    ``cpv`` lookup gives: the newest by build time.
    """
    argv = ["portageq", "metadata", _validate_host_path(root, "root"), "binary",
            validate_cpv(cpv), "PATH"]
    result = runner.run(argv, check=False)
    rel = result.stdout.strip()
    if result.returncode != 0 or not rel:
        return None
    return PurePosixPath(pkgdir(runner)) / rel


def envvar(runner: Runner, name: str) -> str:
    """A variable of the host's Portage configuration (``portageq envvar NAME``)."""
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
        raise UsageError(f"not a Portage variable name: {name!r}")
    return _run(runner, ["portageq", "envvar", name]).stdout.strip()


def pkgdir(runner: Runner) -> str:
    """The host's PKGDIR (binary packages)."""
    return envvar(runner, "PKGDIR")


def distdir(runner: Runner) -> str:
    """The host's DISTDIR (distfiles)."""
    return envvar(runner, "DISTDIR")


__all__ = [
    "EMERGE_BASE",
    "EmergeResult",
    "FailureReport",
    "binpkg_path",
    "distdir",
    "emerge",
    "emerge_argv",
    "envvar",
    "explain_failure",
    "installed_version",
    "manifest",
    "pkgdir",
    "quickpkg",
    "sync",
    "unmerge",
    "validate_cp",
    "validate_cpv",
    "validate_repo",
]
