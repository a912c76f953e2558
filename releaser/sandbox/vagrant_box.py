"""``releaser sandbox vagrant build-box``: the developers' LXC box, built here from the host image.

A Vagrant box for the LXC provider (vagrant-lxc) made from the very root
filesystem the LXC sandbox's hosts boot (``releaser.sandbox.lxc_image``):
Debian with OpenRC as PID 1, sshd, Portage at its real paths, the stand-in
``::gentoo`` profile.  So a dev box is what a staging host is, and nothing
releaser's bootstrap does is baked in: ``releaser host bootstrap`` prepares it
as it prepares every host.  A box adds only what Vagrant itself needs:

* the ``vagrant`` user with Vagrant's public insecure key (shipped with the
  ``vagrant`` package, in the gem's ``keys/`` folder) and sudo without a
  password (Debian's ``sudo`` package, downloaded with this machine's apt and
  installed with the chroot's dpkg: the chroot has no network);
* ``/sbin/halt``, which vagrant-lxc runs to stop a box: OpenRC's
  ``openrc-shutdown`` (Debian's openrc has no halt of its own);
* a boot-runlevel service that gives a new box its own sshd host key on first
  boot (a shared image carries none), what cloud-init does on a cloud image.

Box layout (what vagrant-lxc 1.4 reads): a tar of ``metadata.json``,
``lxc-config`` (the container config without rootfs, hostname or network:
the Vagrantfile gives those) and ``rootfs.tar.gz``, whose members carry the
``./rootfs/`` prefix (vagrant-lxc strips two path components).

The box is keyed by everything in it (``box_key``: the image's key, the
insecure key, sudo's version, ``BOX_REVISION``) and kept next to the image in
the sandbox's artifact cache (``releaser.sandbox.artifact_cache``); a rebuild
happens only when one of those changes.  The image carries gnupg and gemato,
so a box verifies the development overlay's signed commits as every host does.
``vagrant box add`` is skipped too when the Vagrant home already holds the
box of that key (``added.json`` in the Vagrant home records it).
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from releaser.errors import SandboxError, last_line
from releaser.sandbox import lxc_image
from releaser.sandbox.artifact_cache import cache_dir, digest, ensure, run, unpack

#: The name the Vagrantfile's LXC provider uses (``vagrant/settings.json``).
BOX_NAME = "releaser/dev-lxc"
#: Raised whenever what ``_customize`` puts in the box changes (part of the key).
BOX_REVISION = 2
#: Where Debian's vagrant (and HashiCorp's package) keep the insecure key.
INSECURE_KEY_GLOBS = ("/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub",
                      "/opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub")
LXC_CONFIG = """# releaser.sandbox.vagrant_box: OpenRC as PID 1 (the Vagrantfile adds the network)
lxc.include = /usr/share/lxc/config/common.conf
lxc.arch = linux64
lxc.init.cmd = /sbin/openrc-init
lxc.tty.dir =
"""
HOSTKEY_SERVICE = """#!/sbin/openrc-run
# releaser.sandbox.vagrant_box: a box's own sshd host key, made on its first boot.
description="sshd host key of a new box"
depend() {
	before ssh sshd
}
start() {
	[ -s /etc/ssh/ssh_host_ed25519_key ] && return 0
	ebegin "Generating the sshd host key"
	ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key
	eend $?
}
"""
#: vagrant-lxc stops a box with ``lxc-attach /sbin/halt`` first; OpenRC's init is asked so.
HALT = """#!/bin/sh
# releaser.sandbox.vagrant_box: halt as openrc-init understands it.
exec /sbin/openrc-shutdown --poweroff now
"""
SUDOERS = "vagrant ALL=(ALL) NOPASSWD: ALL\n"


def insecure_key() -> str:
    """Vagrant's public insecure key, as the installed vagrant ships it."""
    for pattern in INSECURE_KEY_GLOBS:
        for path in sorted(glob.glob(pattern)):
            return Path(path).read_text().strip()
    raise SandboxError("Vagrant's insecure public key (keys/vagrant.pub) not found: "
                       "install the vagrant package (scripts/bootstrap)")


def sudo_version() -> str:
    """The version of Debian's sudo this machine's apt would download."""
    out = run(["apt-cache", "policy", "sudo"], "apt-cache policy sudo")
    for line in out.splitlines():
        if line.strip().startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            if version and version != "(none)":
                return version
    raise SandboxError("apt knows no sudo package: run apt-get update")


def box_key() -> str:
    """A short digest of everything that goes into the box."""
    return digest({"image": lxc_image.image_key(), "insecure_key": insecure_key(),
                   "sudo": sudo_version(), "revision": BOX_REVISION})


def ensure_box(progress=lambda _m: None) -> Path:
    """The cached box file, built first if missing (SandboxError if it cannot be)."""
    key = box_key()

    def build(work: Path, box: Path) -> None:
        rootfs = work / "rootfs"
        unpack(lxc_image.ensure_image(progress), rootfs)
        _customize(rootfs, work)
        progress("box: packing rootfs.tar.gz")
        run(["tar", "--numeric-owner", "--use-compress-program=gzip -1", "-C", str(work),
             "-cf", str(work / "rootfs.tar.gz"), "./rootfs"], "tar rootfs", timeout=1200)
        (work / "lxc-config").write_text(LXC_CONFIG)
        (work / "metadata.json").write_text(json.dumps(
            {"provider": "lxc", "version": "1.0.0", "built-on": f"dev-lxc-{key}"}) + "\n")
        run(["tar", "-C", str(work), "-cf", str(box), "metadata.json", "lxc-config",
             "rootfs.tar.gz"], "tar box", timeout=600)

    return ensure(cache_dir() / "vagrant", "dev-lxc", key, ".box", build, progress,
                  label="box")


def _customize(rootfs: Path, work: Path) -> None:
    """What Vagrant needs in the image: sudo, the vagrant user and key, a host key per box,
    a halt."""
    debs = work / "debs"
    debs.mkdir()
    run(["sh", "-c", f"cd {_quote(debs)} && apt-get download -q sudo"],
                   "apt-get download sudo")
    drop = rootfs / "tmp/releaser-debs"
    shutil.copytree(debs, drop)
    run(["chroot", str(rootfs), "sh", "-c", "dpkg -i /tmp/releaser-debs/*.deb"],
                   "dpkg -i sudo in the box")
    shutil.rmtree(drop)
    run(["chroot", str(rootfs), "useradd", "--create-home", "--shell", "/bin/bash",
                    "vagrant"], "useradd vagrant")
    ssh = rootfs / "home/vagrant/.ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "authorized_keys").write_text(insecure_key() + "\n")
    (ssh / "authorized_keys").chmod(0o600)
    run(["chroot", str(rootfs), "chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh"],
                   "chown vagrant")
    sudoers = rootfs / "etc/sudoers.d/vagrant"
    sudoers.write_text(SUDOERS)
    sudoers.chmod(0o440)
    service = rootfs / "etc/init.d/ssh-hostkey"
    service.write_text(HOSTKEY_SERVICE)
    service.chmod(0o755)
    (rootfs / "etc/runlevels/boot/ssh-hostkey").symlink_to("/etc/init.d/ssh-hostkey")
    halt = rootfs / "sbin/halt"
    halt.write_text(HALT)
    halt.chmod(0o755)


def _quote(path: Path) -> str:
    return shlex.quote(str(path))


def vagrant_home() -> Path:
    """Vagrant's home: ``$VAGRANT_HOME``, else ``~/.vagrant.d``."""
    return Path(os.environ.get("VAGRANT_HOME") or Path.home() / ".vagrant.d")


def add_box(box: Path, name: str = BOX_NAME, progress=lambda _m: None) -> bool:
    """``vagrant box add`` ``box`` as ``name`` unless that very box is there; True if added."""
    record = vagrant_home() / "releaser-boxes.json"
    added = json.loads(record.read_text()) if record.is_file() else {}
    listed = subprocess.run(["vagrant", "box", "list", "--machine-readable"],
                            capture_output=True, text=True).stdout
    if added.get(name) == box.stem and f",box-name,{name}" in listed:
        progress(f"box: {name} already added to {vagrant_home()}")
        return False
    done = subprocess.run(["vagrant", "box", "add", "--force", "--name", name, str(box)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SandboxError(f"vagrant box add {name} exited {done.returncode}: "
                           f"{last_line(done.stderr, done.stdout)}")
    added[name] = box.stem
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(added, indent=2) + "\n")
    progress(f"box: added {name} to {vagrant_home()}")
    return True
