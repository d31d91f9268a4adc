"""The lab's base images: one per Debian release, from debootstrap, imported into podman once.

Built from Debian's own packages only (no registry), cached in podman's store
under ``Release.image``; a missing image is rebuilt, never assumed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mailfleet.lab.config import RELEASES, LabConfig, Release
from mailfleet.lab.podman import PodmanError, podman, podman_env

PACKAGES = (
    "python3",
    "openssh-server",
    "iproute2",
    "ca-certificates",
    "openssl",
    "sysvinit-core",
    "procps",
    "netbase",
)
_GETTY = re.compile(r"^\d+:\d+:respawn:/sbin/getty")
FALLBACK_MIRROR = "http://deb.debian.org/debian"

Progress = Callable[[str], None]


def _stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def host_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses (so the image comes from the same place)."""
    candidates: list[Path] = [sources_dir / "sources.list"]
    candidates += sorted((sources_dir / "sources.list.d").glob("*.list"))
    candidates += sorted((sources_dir / "sources.list.d").glob("*.sources"))
    for path in candidates:
        try:
            content = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"(https?://\S+/debian)/?(?=\s|$)", content):
            url = match.group(1)
            if "security" not in url:
                return url
    return FALLBACK_MIRROR


def image_exists(config: LabConfig, release: Release) -> bool:
    return podman(config, ["image", "exists", release.image], check=False).returncode == 0


def _customize(rootfs: Path, mirror: str, suite: str) -> None:
    """Make the debootstrapped tree behave like a fresh host under podman."""
    # gettys on ttys that do not exist respawn forever under sysvinit.
    inittab = rootfs / "etc/inittab"
    lines = inittab.read_text().splitlines()
    inittab.write_text(
        "\n".join(("#" + ln) if _GETTY.match(ln) else ln for ln in lines)
        + "\n"
    )
    # Every host gets its own host keys at `lab up`, never ones baked into the image.
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/ssh/sshd_config.d/mailfleet-lab.conf").write_text(
        "# mailfleet lab: key login only, no reverse lookups of the controller\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n"
    )
    security = mirror.rsplit("/debian", 1)[0] + "/debian-security"
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {mirror} {suite} main\n"
        f"deb {mirror} {suite}-updates main\n"
        f"deb {security} {suite}-security main\n"
    )
    for leftover in ("etc/hostname", "etc/machine-id"):
        (rootfs / leftover).unlink(missing_ok=True)
    (rootfs / "etc/machine-id").touch()
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


def build_image(config: LabConfig, release: Release,
                progress: Progress = _stderr_progress) -> float:
    """Build and import the release's base image; returns the wall time in seconds."""
    for tool in ("debootstrap", "tar"):
        if shutil.which(tool) is None:
            raise PodmanError(f"{tool} is not installed: run `make setup`")
    mirror = host_mirror()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mailfleet-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        progress(f"building lab image {release.image} ({release.label}) from {mirror} "
                 "(debootstrap, about a minute)")
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            release.codename,
            str(rootfs),
            mirror,
        ]
        tail: list[str] = []
        counts = {"Retrieving": 0, "Unpacking": 0, "Configuring": 0}
        last = 0.0
        # The context closes debootstrap's pipe and reaps it, whatever happens here.
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                tail = [*tail[-20:], line.rstrip()]
                for word in counts:
                    if line.startswith(f"I: {word}"):
                        counts[word] += 1
                now = time.monotonic()
                if now - last > 5:
                    last = now
                    progress(
                        f"  debootstrap {now - started:5.0f}s: retrieved {counts['Retrieving']}, "
                        f"unpacked {counts['Unpacking']}, configured {counts['Configuring']} "
                        "packages"
                    )
        if proc.returncode != 0:
            raise PodmanError("debootstrap failed:\n" + "\n".join(tail))
        _customize(rootfs, mirror, release.codename)
        progress(f"  importing into podman ({time.monotonic() - started:.0f}s so far)")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            imp = subprocess.run(
                ["podman", "import", "--change", "CMD=/sbin/init", "-", release.image],
                stdin=tar.stdout,
                env=podman_env(config.containers_conf),
                capture_output=True,
                check=False,
            )
        finally:
            # Only podman reads the pipe: if it stops early, tar must get SIGPIPE
            # and end instead of blocking forever on a pipe nobody reads.
            tar.stdout.close()
            tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise PodmanError(f"podman import failed: {imp.stderr.decode(errors='replace')}")
    elapsed = time.monotonic() - started
    progress(f"lab image {release.image} built in {elapsed:.0f}s")
    return elapsed


def ensure_image(config: LabConfig, release: Release,
                 progress: Progress = _stderr_progress) -> bool:
    """Build the release's image unless podman already has it. True when it was built now."""
    if image_exists(config, release):
        return False
    build_image(config, release, progress)
    return True


if __name__ == "__main__":
    # python -m mailfleet.lab.image [12 13 ...]: build the missing base images (CI caches them).
    from mailfleet.lab.config import LabConfig as _LabConfig

    _config = _LabConfig.from_env()
    for _version in sys.argv[1:] or list(RELEASES):
        if not ensure_image(_config, RELEASES[_version]):
            print(f"lab image {RELEASES[_version].image} is present", file=sys.stderr)
