"""The base root filesystem of the LXC sandbox's hosts, built once and cached.

What a cloud image of a Gentoo-like host would hold, and nothing releaser's
bootstrap does: a Debian bookworm system (``debootstrap --variant=minbase``
with an ``--include`` list, the fastest cold build), OpenRC as init, sshd,
python3 with the app's runtime dependencies from Debian (python3-flask,
python3-waitress), git, curl, zstd, gnupg, and Portage and gemato from PyPI
installed *as a distribution package installs them*: the wheels go into the
system Python (downloaded on this machine with releaser's own pip, installed in
the chroot with ``--no-index``: the chroot has no route to PyPI).  gemato and
gpg are what Portage verifies a signed overlay commit with (repos.conf
``sync-git-verify-commit-signature``, ``sync-openpgp-key-path``), as on a
Gentoo host, where Portage's default ``rsync-verify`` flag pulls both in.
Portage's installation type is
set to ``SYSTEM`` so it runs at the real paths with an empty EPREFIX
(``/etc/portage``, ``/var/db/pkg``, ``/usr/share/portage/config``; ``emerge``
and friends in ``/usr/local/bin``), exactly what Gentoo's own build
substitutes into ``portage/installation.py`` and ``portage/const.py``.

A Gentoo host also has its own Portage configuration before releaser comes:
``make.conf`` (a host without the ``portage`` user or sandbox binary, curl as
fetch command), the ``::gentoo`` repository and a profile.  The image has a
small stand-in ``::gentoo`` at ``/var/db/repos/gentoo`` whose one profile
(``default/linux/amd64/23.0``) declares, in ``package.provided``, the
Debian packages the app runs on, at Debian's versions: on a Gentoo host they
would be in the vdb.  The overlay of releaser's environment is the
bootstrap's (``releaser host bootstrap``), never the image's.

The image is keyed by everything that goes in it (``image_key``) and kept as
an uncompressed tarball in the sandbox's artifact cache
(``releaser.sandbox.artifact_cache``), so every later sandbox only unpacks it
per host.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
from pathlib import Path

from releaser.errors import SandboxError
from releaser.hosts.portage_config import (NodeRootSpec, ProfileSpec, RepoSpec,
                                           render_host_make_conf)
from releaser.sandbox.artifact_cache import cache_dir, digest, ensure, run

SUITE = "bookworm"
#: Where debootstrap takes Debian from; ``$RELEASER_LXC_MIRROR`` overrides it.
MIRROR = "http://deb.debian.org/debian"
#: What the image holds beyond minbase: init, sshd, the app's runtime, Portage's tools.
INCLUDE = ("openrc", "openssh-server", "python3", "python3-pip", "python3-flask",
           "python3-waitress", "git", "curl", "zstd", "bzip2", "procps", "iproute2", "pax-utils",
           "ca-certificates", "gnupg")
#: Python distributions from PyPI the image's system Python gets, at releaser's own versions:
#: Portage, and gemato, which Portage verifies signed overlay commits with.
WHEELS = ("portage", "gemato")
#: Raised whenever what the steps below put in the image changes (part of the key).
IMAGE_REVISION = 4
#: The Debian packages the stand-in profile declares as provided, by Gentoo name.
PROVIDED = {"dev-python/flask": "python3-flask", "dev-python/waitress": "python3-waitress"}
#: The stand-in ``::gentoo`` profile a host's make.profile points at.
PROFILE = "default/linux/amd64/23.0"
GENTOO_REPO = Path("var/db/repos/gentoo")
#: Portage's own source, made an installed system package (see the module docstring).
PORTAGE_LIB = "/usr/local/lib/portage"
#: A stand-in for netifrc's ``net.lo``: the container's address is set by LXC before
#: init, and services that ``need net`` (the app's init script) need a provider.
NET_LO = """#!/sbin/openrc-run
# The container's network is configured by LXC before init (static address):
# this service brings up loopback and provides "net", as netifrc's net.lo does.
description="loopback (LXC configures eth0)"
depend() {
	provide net
}
start() {
	ebegin "Bringing up lo"
	ip link set lo up
	eend $?
}
"""
#: OpenRC's own start-stop-daemon, as Gentoo ships it, takes ``--stdout``/``--stderr`` (an
#: init script's ``output_log``/``error_log``); Debian's openrc runs dpkg's, which names
#: that ``--output``.  This shim, first on OpenRC's PATH (``/lib/rc/bin``), translates.
START_STOP_DAEMON = """#!/bin/bash
# releaser.sandbox.lxc_image: OpenRC's --stdout/--stderr as dpkg's --output.
args=() out=
while [ $# -gt 0 ]; do
	case "$1" in
		--stdout|--stderr|-1|-2) out=$2; shift 2 ;;
		--stdout=*|--stderr=*) out=${1#*=}; shift ;;
		--) break ;;
		*) args+=("$1"); shift ;;
	esac
done
[ -n "$out" ] && args+=(--output "$out")
exec /sbin/start-stop-daemon "${args[@]}" "$@"
"""
#: Debian's LSB scripts for a machine with hardware; a container has none of it.
UNUSED_INIT_SCRIPTS = ("hwclock.sh", "procps")
SSHD_CONFIG = """# Written into the image by releaser.sandbox.lxc_image: root logs in with its key only;
# the host key is generated per host by the sandbox, which pins it.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""


def wheel_versions() -> dict[str, str]:
    """The version of each of ``WHEELS``: the one installed with releaser (setup.py), so
    the hosts' Portage and releaser's own speak alike."""
    versions = {}
    for name in WHEELS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise SandboxError(f"{name}, one of releaser's requirements (setup.py), is not "
                               "installed: the hosts' image takes its version; reinstall "
                               "releaser (scripts/bootstrap)") from None
    return versions


def image_key() -> str:
    """A short digest of everything that goes into the image."""
    return digest({"suite": SUITE, "mirror": mirror(), "include": INCLUDE,
                   "wheels": wheel_versions(), "revision": IMAGE_REVISION})


def mirror() -> str:
    return os.environ.get("RELEASER_LXC_MIRROR", MIRROR)


def ensure_image(progress=lambda _m: None) -> Path:
    """The cached image tarball, built first if missing (SandboxError if it cannot be)."""
    return ensure(cache_dir(), "rootfs", image_key(), ".tar", _build, progress,
                  label="base root filesystem")


def _build(work: Path, tarball: Path) -> None:
    """The image (see the module docstring), as an uncompressed tarball at ``tarball``."""
    cache = cache_dir()
    rootfs = work / "rootfs"
    # The .deb files are kept: a rebuild (another IMAGE_REVISION) downloads nothing again.
    debs = cache / "debs"
    debs.mkdir(exist_ok=True)
    run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}",
         f"--cache-dir={debs}", SUITE, str(rootfs), mirror()], "debootstrap", timeout=1800)
    _install_wheels(rootfs, [_wheel(cache, name, version)
                             for name, version in wheel_versions().items()])
    _make_portage_a_system_install(rootfs)
    _configure(rootfs)
    run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."], "tar")


def _wheel(cache: Path, name: str, version: str) -> Path:
    """A pure-Python wheel from PyPI, downloaded once with releaser's own pip."""
    import sys

    wheels = cache / "wheels"
    wheel = wheels / f"{name}-{version}-py3-none-any.whl"
    if not wheel.is_file():
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        f"{name}=={version}", "-d", str(wheels)],
                       check=False, capture_output=True, text=True)
    if not wheel.is_file():
        raise SandboxError(f"could not download {wheel.name} into {wheels} with pip")
    return wheel


def _install_wheels(rootfs: Path, wheels: list[Path]) -> None:
    """The wheels into the image's system Python, from files (the chroot has no network)."""
    drop = rootfs / "tmp/releaser-wheels"
    drop.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        shutil.copy2(wheel, drop / wheel.name)
    run(["chroot", str(rootfs), "python3", "-m", "pip", "install", "-q",
         "--break-system-packages", "--no-index", "--no-deps", "--no-warn-script-location",
         *(f"/tmp/releaser-wheels/{wheel.name}" for wheel in wheels)],
        "pip install in the image")
    shutil.rmtree(drop)


def _make_portage_a_system_install(rootfs: Path) -> None:
    """What Gentoo's own build substitutes into Portage (see the module docstring)."""
    package = rootfs / "usr/local/lib/python3.11/dist-packages/portage"
    _substitute(package / "installation.py", {
        'if "MODULE" == "MODULE":': 'if "SYSTEM" == "MODULE":',
        'elif "MODULE" == "SYSTEM":': 'elif "SYSTEM" == "SYSTEM":'})
    _substitute(package / "const.py", {
        '    PORTAGE_BASE_PATH = """"""': f'    PORTAGE_BASE_PATH = """{PORTAGE_LIB}"""',
        '    PORTAGE_BIN_PATH = """"""': f'    PORTAGE_BIN_PATH = """{PORTAGE_LIB}/bin"""'})
    # A system Portage reads its global configuration at /usr/share/portage/config.
    (rootfs / "usr/share/portage").symlink_to("../local/share/portage")


def _substitute(path: Path, replacements: dict[str, str]) -> None:
    text = path.read_text()
    for old, new in replacements.items():
        if old not in text:
            raise SandboxError(f"{path}: {old!r} not found: this Portage is laid out "
                               "differently; the image needs updating")
        text = text.replace(old, new)
    path.write_text(text)


def _debian_version(rootfs: Path, package: str) -> str:
    """The upstream version of a Debian package installed in the image (``2.2.2``)."""
    out = run(["chroot", str(rootfs), "dpkg-query", "-W", "-f", "${Version}", package],
               f"dpkg-query {package}")
    return out.split(":")[-1].split("-")[0].split("+")[0]


def _configure(rootfs: Path) -> None:
    """The host's own configuration: Portage's, OpenRC's, sshd's (see the module docstring)."""
    _gentoo_standin(rootfs)
    # Portage's stock binary package layout (binpkg-multi-instance), as on a Gentoo host.
    spec = NodeRootSpec(root=Path("/"), repos=[RepoSpec("gentoo")],
                        profile=ProfileSpec("gentoo", PROFILE), stock_binpkgs=True)
    etc = rootfs / "etc/portage"
    (etc / "repos.conf").mkdir(parents=True, exist_ok=True)
    (etc / "make.conf").write_text(render_host_make_conf(spec))
    (etc / "make.profile").symlink_to(f"../../{GENTOO_REPO}/profiles/{PROFILE}")
    for d in ("var/db/pkg", "var/cache/distfiles", "var/cache/binpkgs", "var/tmp"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    # OpenRC in a container: no hardware clock or consoles to set up.
    with open(rootfs / "etc/rc.conf", "a") as rc:
        rc.write('\n# releaser.sandbox.lxc_image\nrc_sys="lxc"\n')
    for name in UNUSED_INIT_SCRIPTS:
        for link in (rootfs / "etc/runlevels").glob(f"*/{name}"):
            link.unlink()
        (rootfs / "etc/init.d" / name).unlink(missing_ok=True)
    shim = rootfs / "lib/rc/bin/start-stop-daemon"
    shim.write_text(START_STOP_DAEMON)
    shim.chmod(0o755)
    # Portage 3.0.83 calls GNU tar as gtar (a Gentoo system has the link).
    (rootfs / "usr/bin/gtar").symlink_to("tar")
    net = rootfs / "etc/init.d/net.lo"
    net.write_text(NET_LO)
    net.chmod(0o755)
    (rootfs / "etc/runlevels/default/net.lo").symlink_to("/etc/init.d/net.lo")
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/ssh/sshd_config.d/releaser.conf").write_text(SSHD_CONFIG)
    (rootfs / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / junk).glob("*"):
            if entry.is_file():
                entry.unlink()


def _gentoo_standin(rootfs: Path) -> None:
    """A minimal ``::gentoo``: repo name, layout, one profile declaring Debian's packages."""
    repo = rootfs / GENTOO_REPO
    profile = repo / "profiles" / PROFILE
    profile.mkdir(parents=True)
    python = run(["chroot", str(rootfs), "python3", "-c",
                   "import platform; print(platform.python_version())"], "python3").strip()
    provided = [f"dev-lang/python-{python}"] + [
        f"{cp}-{_debian_version(rootfs, deb)}" for cp, deb in sorted(PROVIDED.items())]
    files = {
        "profiles/repo_name": "gentoo\n",
        "profiles/arch.list": "amd64\n",
        "profiles/categories": "dev-lang\ndev-python\n",
        "profiles/profiles.desc": f"amd64\t{PROFILE}\tstable\n",
        "metadata/layout.conf": "masters =\nthin-manifests = true\nprofile-formats = portage-2\n",
        # EAPI 6: the last EAPI whose profiles may hold package.provided.
        f"profiles/{PROFILE}/eapi": "6\n",
        f"profiles/{PROFILE}/make.defaults": MAKE_DEFAULTS,
        f"profiles/{PROFILE}/package.provided": "".join(f"{p}\n" for p in provided),
    }
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)


MAKE_DEFAULTS = """# The stand-in of Gentoo's default/linux/amd64 profile (releaser.sandbox.lxc_image).
ARCH="amd64"
ACCEPT_KEYWORDS="amd64"
CHOST="x86_64-pc-linux-gnu"
ELIBC="glibc"
KERNEL="linux"
USERLAND="GNU"
IUSE_IMPLICIT="prefix prefix-guest prefix-stack"
USE_EXPAND="ELIBC KERNEL USERLAND"
USE_EXPAND_HIDDEN="ELIBC KERNEL USERLAND"
USE_EXPAND_IMPLICIT="ARCH ELIBC KERNEL USERLAND"
USE_EXPAND_UNPREFIXED="ARCH"
USE_EXPAND_VALUES_ARCH="amd64"
USE_EXPAND_VALUES_ELIBC="glibc"
USE_EXPAND_VALUES_KERNEL="linux"
USE_EXPAND_VALUES_USERLAND="GNU"
USE="amd64 elibc_glibc kernel_linux userland_GNU"
CONFIG_PROTECT="/etc"
CONFIG_PROTECT_MASK="/etc/env.d"
"""
