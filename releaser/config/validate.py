"""What a configured value may be before it reaches a command, a path or the ebuild.

Every name, address, port, URL and path in releaser.toml ends up somewhere
dangerous: in an argv run as root on a node, in a path under the central
repository (``locks/ENV.lock`` is removed with ``rm -rf``), or in the bash
text of the ebuild that every emerge phase sources as root.  Quoting at each
of those places is the second line of defence; this module is the first: a
value that is not plainly what its key means is refused when the configuration
loads, before anything runs.  Values are refused, never mangled, so what the
operator wrote is what reaches the fleet.

Each check returns the value and raises ``Invalid`` with the reason; the
configuration reader (``releaser.config``) adds the file and the dotted key.
"""

from __future__ import annotations

import ipaddress
import math
import posixpath
import re
from importlib import resources
from urllib.parse import urlsplit

from portage.dep import Atom, _repo_name_re, isvalidatom, use_reduce
from portage.exception import InvalidDependString

from releaser import appcontract
from releaser.hosts.health import HEALTH_CHECKS


class Invalid(ValueError):
    """A value that its key does not allow; the message says why (no file, no key)."""


#: Environment names become path components on central (``ledger/ENV.json``, ``locks/ENV.lock``).
_ENV_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
#: Node names become path components (dumps/ENV/NODE) and SSH/host labels.
_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: POSIX portable user names (useradd's default NAME_REGEX).
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
#: Characters allowed in a path: no blank, quote, glob, ``$``, backslash or shell operator.
_PATH_CHARS = re.compile(r"[A-Za-z0-9._+@%,:=/-]*")
#: Characters allowed in a git tag prefix: ``--match=PREFIX[0-9]*`` must stay a plain prefix.
_TAG_PREFIX = re.compile(r"[A-Za-z0-9._/-]{0,32}")
#: A category name (PMS 3.1.1).
_CATEGORY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9+_.-]*")
#: A licence name (PMS 3.1.6).
_LICENSE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9+_.-]*")
#: Never in a DESCRIPTION or URL written into the ebuild: bash would give them meaning.
_BASH_SPECIAL = set('"$`\\')
#: Gentoo's limit (devmanual, pkgcheck BadDescription).
DESCRIPTION_MAX = 80


def _whole(pattern: re.Pattern, value: str, what: str) -> str:
    """``value`` if ``pattern`` matches all of it, else Invalid: ``'VALUE' is not WHAT``."""
    if not pattern.fullmatch(value):
        raise Invalid(f"{value!r} is not {what}")
    return value


def env_name(value: str) -> str:
    return _whole(_ENV_NAME, value, "an environment name (a lower-case letter, then "
                                    "lower-case letters, digits, '_' or '-')")


def node_name(value: str) -> str:
    return _whole(_NODE_NAME, value, "a node name (a letter or digit, then letters, digits, "
                                     "'.', '_' or '-'; at most 64)")


def repo_name(value: str) -> str:
    """A Portage repository name (PMS 3.1.5), as repos.conf and profiles/repo_name spell it."""
    return _whole(_repo_name_re, value, "a Portage repository name (letters, digits, '_' "
                                        "and '-', not starting with '-')")


def user_name(value: str) -> str:
    return _whole(_USER, value, "a user name (lower-case letters, digits, '_', '-')")


def host(value: str) -> str:
    """A DNS host name or an IP address literal; never something ssh reads as an option."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    labels = value.rstrip(".").split(".") if value else [""]
    if len(value) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise Invalid(f"{value!r} is not a host name or an IP address")
    return value


def port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise Invalid(f"{value} is not a TCP port (1 to 65535)")
    return value


def positive(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise Invalid(f"{value} must be a number greater than 0")
    return value


#: Units a duration may carry (``lock_lease``, ``lock acquire --lease``): seconds each.
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value: "int | float | str") -> float:
    """Seconds, from a number of seconds or a string such as ``90s``, ``2m``, ``2h``, ``1d``."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
        if not match:
            raise Invalid(f"{value!r} is not a duration (give seconds, or 90s, 2m, 2h, 1d)")
        value = float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"{value!r} is not a duration (give seconds, or 90s, 2m, 2h, 1d)")
    return positive(float(value))


#: What an environment may take (``[environments.NAME] allow``): only releases built
#: from a release tag, also release-candidate tags, or any build.
ALLOW_POLICIES = ("release", "rc", "any")


def default_allow(env: str) -> str:
    """Production takes only release tags unless configured otherwise; others anything."""
    return "release" if env == "production" else "any"


def allow_policy(value: str) -> str:
    if value not in ALLOW_POLICIES:
        raise Invalid(f"{value!r} is not a policy (give one of {', '.join(ALLOW_POLICIES)})")
    return value


#: How an environment's nodes install a release (``[environments.NAME] install``): built
#: on every node from the ebuild, or the one binary package built on the build side.
INSTALL_MODES = ("source", "binary")


def install_mode(value: str) -> str:
    if value not in INSTALL_MODES:
        raise Invalid(f"{value!r} is not an install mode (give one of {', '.join(INSTALL_MODES)})")
    return value


def non_negative(value: int) -> int:
    if isinstance(value, bool) or value < 0:
        raise Invalid(f"{value!r} must be 0 or more")
    return value


#: The longest operator's reason (``--reason``, ``--break``) a ledger event carries.
MAX_REASON = 500


def reason(value: str) -> str:
    """An operator's why (``--reason``): one printable, non-empty line, recorded as given."""
    text = value.strip()
    if not text or not text.isprintable() or len(text) > MAX_REASON:
        raise Invalid(f"a reason is one non-empty printable line of at most {MAX_REASON} "
                      "characters")
    return text


def url(value: str, *, base: bool = False) -> str:
    """An http:// or https:// URL with a valid host (and port), no blank, quote or ``$``.

    ``base``: a URL releaser appends file names to (``distfiles_url``), so it
    may carry no query or fragment either.
    """
    if any(c.isspace() or not c.isprintable() or c in _BASH_SPECIAL or c == "'" for c in value):
        raise Invalid(f"{value!r} is not a URL: blanks, control characters, quotes, '$' "
                      "and backslashes are not allowed (percent-encode them)")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise Invalid(f"{value!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"{value!r} must be an http:// or https:// URL with a host")
    host(parts.hostname)
    if base and (parts.query or parts.fragment or "?" in value or "#" in value):
        raise Invalid(f"{value!r} must not have a query or fragment: file names are "
                      "appended to it")
    return value


#: The placeholders of ``[central] sync_uri``: the environment's name (the central
#: repository keeps ``overlays/ENV.git``) and its overlay's repository name.
SYNC_URI_FIELDS = ("env", "overlay")
#: Schemes a node may sync an overlay over: the network ones, and a local path
#: (``file://`` or ``/...``) for nodes that share this machine's filesystem.
SYNC_URI_SCHEMES = ("ssh", "https", "http", "file")


def sync_uri(value: str) -> str:
    """A git URL template nodes sync an environment's overlay from (``[central] sync_uri``).

    ``{env}`` and ``{overlay}`` are replaced per environment (both are
    validated names); the result must be an ``ssh://``, ``https://``,
    ``http://`` or ``file://`` URL, or an absolute path, of plain characters:
    it is written into every node's repos.conf and run by git as root.
    """
    import string

    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError as exc:
        raise Invalid(f"{value!r} is not a URL template ({exc})") from None
    for _text, name, spec, conversion in parsed:
        if name is not None and (name not in SYNC_URI_FIELDS or spec or conversion):
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise Invalid(f"{value!r}: unknown placeholder {{{shown}}} (known: "
                          f"{', '.join('{' + f + '}' for f in SYNC_URI_FIELDS)})")
    sample = value.format(env="env", overlay="overlay")
    try:
        _plain_path(sample)
    except Invalid:
        raise Invalid(f"{value!r}: only letters, digits and ._+@%,:=/- are allowed in a sync "
                      "URL") from None
    parts = urlsplit(sample)
    if not parts.scheme:
        if not sample.startswith("/") or posixpath.normpath(sample) != sample:
            raise Invalid(f"{value!r} is not a URL (ssh://, https://, http://, file://) or a "
                          "normalised absolute path")
        return value
    if parts.scheme not in SYNC_URI_SCHEMES:
        raise Invalid(f"{value!r}: scheme {parts.scheme!r} is not one of "
                      f"{', '.join(s + '://' for s in SYNC_URI_SCHEMES)}")
    if parts.scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise Invalid(f"{value!r}: a file:// URL names an absolute path (file:///srv/...)")
        return value
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise Invalid(f"{value!r} is not a valid URL ({exc})") from None
    if not parts.hostname or parts.query or parts.fragment or not parts.path.startswith("/"):
        raise Invalid(f"{value!r} must name a host and an absolute path, without query or "
                      "fragment")
    host(parts.hostname)
    if parts.username is not None:
        user_name(parts.username)
    if parts.password is not None:
        raise Invalid(f"{value!r}: no password in a sync URL (it would be in every node's "
                      "repos.conf); use a key or a credential helper")
    return value


def is_local_sync_uri(value: str) -> bool:
    """True when a ``sync_uri`` is a path on the node's own filesystem (``/...``, ``file://``)."""
    return value.startswith("/") or value.startswith("file://")


def portage_version(value: str) -> str:
    """A Portage version (``3.0.83``), as Portage's own version parser takes it."""
    from portage.versions import ververify

    if not ververify(value):
        raise Invalid(f"{value!r} is not a version (e.g. 3.0.83)")
    return value


def command(value: list) -> list[str]:
    """A command run on the operator's machine (a hook): an argv list, never a shell string.

    Empty: no command.  Otherwise strings without NUL (the OS cannot pass
    one), the program a non-empty word that no option parser reads as an
    option.  A hook that needs a shell names it: ``["sh", "-c", "..."]``.
    """
    if not all(isinstance(word, str) for word in value):
        raise Invalid(f"{value!r} must be a list of strings (an argv: program, then arguments)")
    if any("\0" in word for word in value):
        raise Invalid("a command cannot contain a NUL character")
    if value and (not value[0].strip() or value[0].startswith("-")):
        raise Invalid(f"{value[0]!r} is not a program: give its name or path first")
    return list(value)


def absolute_path(value: str) -> str:
    """An absolute, normalised path of plain characters, as given (no ``..``, no ``//``)."""
    if not value.startswith("/"):
        raise Invalid(f"{value!r} must be an absolute path")
    _plain_path(value)
    if posixpath.normpath(value) != value or value.startswith("//"):
        raise Invalid(f"{value!r} is not a normalised path (no '.', '..', '//' or trailing "
                      f"'/'; write {posixpath.normpath(value)!r})")
    return value


def relative_path(value: str) -> str:
    """A normalised path inside a directory: relative, no ``..``."""
    _plain_path(value)
    if value in ("", "."):
        return "."
    normal = posixpath.normpath(value)
    if value.startswith("/") or normal.split("/")[0] == ".." or normal != value.rstrip("/"):
        raise Invalid(f"{value!r} must be a normalised relative path inside the repository")
    return value


def _plain_path(value: str) -> None:
    if not _PATH_CHARS.fullmatch(value):
        bad = sorted({c for c in value if not _PATH_CHARS.fullmatch(c)})
        raise Invalid(f"{value!r}: character(s) {''.join(bad)!r} not allowed in a path "
                      "(letters, digits and ._+@%,:=/- only)")


def tag_prefix(value: str) -> str:
    return _whole(_TAG_PREFIX, value, "a tag prefix (letters, digits and ._/- only, at most 32)")


def category(value: str) -> str:
    """A Gentoo category name (PMS 3.1.1)."""
    return _whole(_CATEGORY, value, "a Gentoo category name")


def package(category: str, name: str) -> str:
    """``CATEGORY/NAME`` when Portage takes it as a plain package name (no version, slot...)."""
    cp = f"{category}/{name}"
    if not isvalidatom(cp) or Atom(cp).cp != cp:
        raise Invalid(f"{cp!r} is not a valid Gentoo package name")
    return cp


def module_name(value: str) -> str:
    """The app's name as a Python package: the app's contract runs ``python3 -m NAME``."""
    if not (value.isidentifier() and value.isascii()):
        raise Invalid(f"{value!r} is not a Python module name (letters, digits and '_'): "
                      "the app is run as `python3 -m NAME` (releaser.appcontract)")
    return value


def database_env(value: str) -> str:
    """The environment variable the app reads its database path from."""
    try:
        return appcontract.check_database_env(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


#: A database or user name in a database URL: it reaches commands and SQL identifiers.
_DB_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_DB_SCHEMES = {"postgresql": ("postgresql", "postgres"), "mariadb": ("mariadb", "mysql")}


def database_url(value: str, backend: str) -> str:
    """A server database's URL ``SCHEME://USER@HOST[:PORT]/NAME`` of ``backend``: no
    password (that comes from the environment), no query, plain names."""
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        raise Invalid(f"{value!r} has an invalid port") from None
    if parts.scheme not in _DB_SCHEMES.get(backend, ()):
        raise Invalid(f"{value!r} is not a {backend} URL ({backend}://USER@HOST[:PORT]/NAME)")
    if parts.password is not None:
        raise Invalid("the URL must not hold a password: set password_env's variable instead")
    name = parts.path[1:]
    if parts.query or parts.fragment or not parts.hostname or port == 0 \
            or not _DB_NAME.fullmatch(parts.username or "") or not _DB_NAME.fullmatch(name):
        raise Invalid(f"{value!r} is not {backend}://USER@HOST[:PORT]/NAME (user and database "
                      "names of letters, digits and '_')")
    host(parts.hostname)
    return value


def health_path(value: str) -> str:
    """The URL path of the app's health endpoint (``/health``)."""
    try:
        return appcontract.check_health_path(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def health_check(value: str) -> str:
    """Where a node's health URL is asked from: ``"node"`` or ``"operator"``."""
    if value not in HEALTH_CHECKS:
        raise Invalid(f"{value!r}: give \"node\" (asked on the node, where the app listens) "
                      "or \"operator\" (asked from this machine)")
    return value


def atom(value: str) -> str:
    if not isvalidatom(value):
        raise Invalid(f"{value!r} is not a valid dependency atom")
    return value


def description(value: str) -> str:
    """One line Gentoo accepts as DESCRIPTION; refused (not mangled) when bash would care."""
    if not value.strip() or len(value) > DESCRIPTION_MAX:
        raise Invalid(f"must be 1 to {DESCRIPTION_MAX} characters (it is {len(value)})")
    if not value.isprintable():
        raise Invalid(f"{value!r} must be one line without control characters")
    bad = sorted(set(value) & _BASH_SPECIAL)
    if bad:
        raise Invalid(f"{value!r} must not contain {' '.join(bad)}")
    if value != value.strip():
        raise Invalid(f"{value!r} has leading or trailing blanks")
    return value


def license_expression(value: str, known: set[str] | None = None) -> str:
    """A LICENSE value: licence names and ``|| ( ... )`` groups, each licence in the overlays.

    ``known``: licence names the overlay skeleton carries (default: read
    from the packaged skeleton); pkgcheck and Portage need the file there.
    """
    tokens = value.split()
    if not tokens:
        raise Invalid("must name at least one licence")
    names = [t for t in tokens if t not in ("||", "(", ")")]
    for name in names:
        if not _LICENSE_NAME.fullmatch(name):
            raise Invalid(f"{name!r} is not a licence name")
    try:
        use_reduce(value, matchall=True, flat=True)
    except InvalidDependString as exc:
        raise Invalid(f"{value!r} is not a valid LICENSE expression ({exc})") from None
    known = skeleton_licenses() if known is None else known
    missing = sorted(set(names) - known)
    if missing:
        raise Invalid(f"licence {', '.join(missing)} is not in the overlays' licenses/ "
                      f"(known: {', '.join(sorted(known)) or 'none'}; add the file to "
                      "overlays/skeleton/licenses/)")
    return value


def skeleton_licenses() -> set[str]:
    """Licence files of the packaged overlay skeleton (overlays/skeleton/licenses/,
    ``releaser.central.overlay.skeleton()``, which imports this module)."""
    licenses = resources.files("releaser.overlays") / "skeleton" / "licenses"
    return {f.name for f in licenses.iterdir() if f.is_file()} if licenses.is_dir() else set()
