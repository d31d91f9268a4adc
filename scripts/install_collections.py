#!/usr/bin/env python3
"""Install the Ansible collections of requirements files without reaching Ansible Galaxy.

Users run ``ansible-galaxy collection install -r requirements.yml``. This machine,
and the CI machines like it, reach PyPI and Debian's mirror but not Galaxy, so
the project's own set-up takes the same collection releases from PyPI's
``ansible`` package, which bundles them (only its wheel is fetched, into the
cache; it is not installed: the venv carries ansible-core and these collections,
not the 470 MB of all the others). Each wanted collection is cut out of the wheel
as the artifact Galaxy would serve (its files with their MANIFEST.json and
FILES.json, which ansible-galaxy checks on install) and installed with
``ansible-galaxy collection install --offline``.

    install_collections.py [--path DIR] [--artifacts DIR] REQUIREMENTS.yml...

``--path`` defaults to the running Python's site-packages, which ansible-core
searches for ``ansible_collections`` (no configuration needed, nothing outside
the venv touched). ``--artifacts DIR`` only writes the artifacts there.
Idempotent: a collection already installed at a version the file allows is kept.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

# The community package release whose collections the suite is run with; its
# bundled versions must satisfy every requirements file (checked below).
ANSIBLE_RELEASE = "12.3.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mailfleet"


class Failure(Exception):
    pass


def wanted(files: list[Path]) -> dict[str, SpecifierSet]:
    """Collection name -> allowed versions, from requirements files."""
    out: dict[str, SpecifierSet] = {}
    for path in files:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for entry in doc.get("collections") or []:
            name, spec = (entry, "*") if isinstance(entry, str) else (entry["name"],
                                                                       entry.get("version", "*"))
            out[name] = SpecifierSet("" if spec == "*" else spec)
    return out


def installed_version(root: Path, name: str) -> Version | None:
    manifest = root / "ansible_collections" / Path(*name.split(".")) / "MANIFEST.json"
    try:
        return Version(json.loads(manifest.read_text())["collection_info"]["version"])
    except (OSError, ValueError, KeyError):
        return None


def community_wheel() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    found = sorted(CACHE.glob(f"ansible-{ANSIBLE_RELEASE}-*.whl"))
    if found:
        return found[0]
    print(f"collections: fetching ansible {ANSIBLE_RELEASE}'s wheel from PyPI (not installed)",
          file=sys.stderr)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--only-binary=:all:", "--dest", str(CACHE), f"ansible=={ANSIBLE_RELEASE}"],
        capture_output=True, text=True, check=False, timeout=900,
    )
    found = sorted(CACHE.glob(f"ansible-{ANSIBLE_RELEASE}-*.whl"))
    if done.returncode != 0 or not found:
        raise Failure(f"could not fetch ansible=={ANSIBLE_RELEASE} from PyPI: "
                      f"{done.stderr.strip()[-500:]}")
    return found[0]


_REWRITTEN = ("FILES.json", "MANIFEST.json")


def _entry(name: str, sha256: str | None) -> dict[str, object]:
    return {"name": name, "ftype": "dir" if sha256 is None else "file",
            "chksum_type": None if sha256 is None else "sha256", "chksum_sha256": sha256,
            "format": 1}


def cut_artifact(wheel: Path, name: str, spec: SpecifierSet, out: Path) -> Path:
    """The collection ``name`` of the community wheel as a Galaxy artifact in ``out``."""
    prefix = "ansible_collections/" + name.replace(".", "/") + "/"
    with zipfile.ZipFile(wheel) as whl:
        members = [m for m in whl.infolist() if m.filename.startswith(prefix)]
        manifest = next((m for m in members if m.filename == prefix + "MANIFEST.json"), None)
        if manifest is None:
            raise Failure(f"ansible {ANSIBLE_RELEASE} does not bundle {name}")
        version = json.loads(whl.read(manifest))["collection_info"]["version"]
        if Version(version) not in spec:
            raise Failure(f"ansible {ANSIBLE_RELEASE} bundles {name} {version}, outside {spec}: "
                          "raise ANSIBLE_RELEASE in scripts/install_collections.py")
        files = {m.filename[len(prefix):]: whl.read(m) for m in members
                 if not m.is_dir() and m.filename[len(prefix):] not in _REWRITTEN}
        modes = {m.filename[len(prefix):]: (m.external_attr >> 16) & 0o777 or 0o644
                 for m in members}
        manifest_doc = json.loads(whl.read(manifest))
    # The community package leaves out some of a collection's files (its CI, its
    # tests) but keeps FILES.json, which ansible-galaxy checks file by file: the
    # artifact gets a FILES.json of the files it has (and MANIFEST.json its sum).
    folders = sorted({str(parent) for name in files for parent in Path(name).parents
                      if str(parent) != "."})
    listing = [_entry(".", None)] + [_entry(d, None) for d in folders]
    listing += [_entry(n, hashlib.sha256(data).hexdigest()) for n, data in sorted(files.items())]
    files_json = json.dumps({"files": listing, "format": 1}, indent=4).encode()
    manifest_doc["file_manifest_file"]["chksum_sha256"] = hashlib.sha256(files_json).hexdigest()
    files["FILES.json"] = files_json
    files["MANIFEST.json"] = json.dumps(manifest_doc, indent=4).encode()
    artifact = out / f"{name.replace('.', '-')}-{version}.tar.gz"
    with tarfile.open(artifact, "w:gz") as tar:
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 315532800
            tar.addfile(info)
        for member_name, data in sorted(files.items()):
            info = tarfile.TarInfo(member_name)
            info.size, info.mtime = len(data), 315532800
            info.mode = modes.get(member_name, 0o644)
            tar.addfile(info, io.BytesIO(data))
    return artifact


def galaxy_install(artifacts: list[Path], path: Path) -> None:
    galaxy = Path(sys.executable).parent / "ansible-galaxy"
    done = subprocess.run(
        [str(galaxy), "collection", "install", "--offline", "--force", "-p", str(path),
         *map(str, artifacts)],
        capture_output=True, text=True, check=False, timeout=300,
    )
    if done.returncode != 0:
        raise Failure("ansible-galaxy collection install failed: "
                      + (done.stderr or done.stdout).strip()[-800:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("requirements", nargs="+", type=Path)
    parser.add_argument("--path", type=Path, default=Path(sysconfig.get_paths()["purelib"]))
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="write the artifacts here instead of installing them")
    args = parser.parse_args(argv)
    try:
        need = wanted(args.requirements)
        if args.artifacts is None:
            need = {n: s for n, s in need.items()
                    if (v := installed_version(args.path, n)) is None or v not in s}
            if not need:
                return 0
        out = args.artifacts or CACHE / "artifacts"
        out.mkdir(parents=True, exist_ok=True)
        wheel = community_wheel()
        artifacts = [cut_artifact(wheel, name, spec, out) for name, spec in need.items()]
        if args.artifacts is None:
            print(f"collections: installing {', '.join(need)} into {args.path}", file=sys.stderr)
            galaxy_install(artifacts, args.path)
        else:
            print("\n".join(map(str, artifacts)))
    except (Failure, OSError, yaml.YAMLError) as exc:
        print(f"collections: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
