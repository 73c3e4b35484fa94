"""The operator image that `make image` (hack/image.sh) builds, checked from its OCI archive.

Containers cannot run on the build machines, so the test unpacks the archive's layers into a
folder, as a runtime would, and runs ``sunblend`` in it through
``unshare --fork --pid --mount-proc chroot --userspec=UID:GID``, as the image's own non-root user
and with the image's environment. It builds the archive first when it is missing: about 80 s cold
on 2 cores (the Debian root file system is then cached under ~/.cache/sunblend/image/), under a
minute warm. It is skipped only where the machine cannot unshare and chroot (that needs root).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ARCHIVE = ROOT / "out" / "sunblend-image.oci.tar"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
AT = "2026-11-22T14:00:00Z"


def _why_no_chroot() -> str | None:
    """Why this machine cannot run a command in an unpacked image, or None when it can."""
    if os.geteuid() != 0:
        return "needs root to unshare and chroot into the unpacked image (CI runs as root)"
    for tool in ("unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH"
    probe = subprocess.run(["unshare", "--fork", "--pid", "--mount-proc", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare --fork --pid --mount-proc fails here: {probe.stderr.strip()}"
    return None


WHY_NOT = _why_no_chroot()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


@dataclass
class Image:
    """An image archive, unpacked."""

    ref_name: str
    manifest: dict
    config: dict
    rootfs: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the image's entrypoint with these arguments, as its user, in a new PID namespace."""
        settings = self.config["config"]
        env = dict(entry.split("=", 1) for entry in settings["Env"])
        command = [
            shutil.which("unshare") or "unshare",
            "--fork",
            "--pid",
            f"--mount-proc={self.rootfs / 'proc'}",
            shutil.which("chroot") or "chroot",
            f"--userspec={settings['User']}",
            str(self.rootfs),
            *settings["Entrypoint"],
            *args,
        ]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def _build() -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    build = subprocess.run(
        ["bash", str(ROOT / "hack" / "image.sh")], capture_output=True, text=True, env=env, timeout=1500
    )
    assert build.returncode == 0, f"hack/image.sh failed:\n{build.stderr[-4000:]}"


def _blob(layout: Path, digest: str) -> Path:
    algorithm, value = digest.split(":", 1)
    return layout / "blobs" / algorithm / value


def _inside(rootfs: Path, name: str) -> Path:
    """The path of a layer entry in the rootfs; refused if a symlink in it leads out of the rootfs."""
    path = rootfs / name
    if path == rootfs:
        return path
    parent = os.path.realpath(path.parent)
    assert os.path.commonpath([parent, rootfs]) == str(rootfs), f"{name} leads out of the image"
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def _unpack_layer(layer: Path, rootfs: Path) -> None:
    """Apply one layer as the OCI image spec says: its whiteouts first, then its entries."""
    with tarfile.open(layer, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            path = Path(member.name)
            if path.name == ".wh..wh..opq":
                for child in _inside(rootfs, member.name).parent.iterdir():
                    _remove(child)
            elif path.name.startswith(".wh."):
                _remove(_inside(rootfs, str(path.parent / path.name.removeprefix(".wh."))))
        for member in members:
            if Path(member.name).name.startswith(".wh."):
                continue
            target = _inside(rootfs, member.name)
            if not member.isdir() and (target.is_symlink() or target.exists()):
                _remove(target)  # replace, never write through, what a lower layer left there
            tar.extract(member, rootfs, numeric_owner=True, filter="fully_trusted")


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    if not ARCHIVE.exists():
        _build()
    with tempfile.TemporaryDirectory(prefix="sunblend-image-test.") as folder:
        layout, rootfs = Path(folder) / "layout", Path(os.path.realpath(folder)) / "rootfs"
        with tarfile.open(ARCHIVE) as archive:
            archive.extractall(layout, filter="data")
        index = json.loads((layout / "index.json").read_text())
        assert len(index["manifests"]) == 1, "the archive holds exactly one image"
        descriptor = index["manifests"][0]
        manifest = json.loads(_blob(layout, descriptor["digest"]).read_text())
        config = json.loads(_blob(layout, manifest["config"]["digest"]).read_text())
        rootfs.mkdir()
        for layer in manifest["layers"]:
            _unpack_layer(_blob(layout, layer["digest"]), rootfs)
        shutil.rmtree(layout)
        yield Image(descriptor["annotations"]["org.opencontainers.image.ref.name"], manifest, config, rootfs)


def test_the_image_is_named_as_the_chart_expects_and_labelled(image):
    chart = yaml.safe_load((ROOT / "charts" / "sunblend" / "Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts" / "sunblend" / "values.yaml").read_text())
    assert chart["appVersion"] == VERSION
    assert image.ref_name == f"{values['image']['repository']}:{values['image']['tag'] or chart['appVersion']}"
    labels = image.config["config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.source"].startswith("https://")
    revision = labels["org.opencontainers.image.revision"]
    assert revision == "unknown" or re.fullmatch(r"[0-9a-f]{40}", revision)
    assert image.manifest["annotations"] == labels


def test_the_image_runs_sunblend_as_a_non_root_user(image):
    settings = image.config["config"]
    assert settings["User"] == "65532:65532"
    assert settings["Entrypoint"] == ["/opt/sunblend/bin/sunblend"]
    passwd = (image.rootfs / "etc" / "passwd").read_text().splitlines()
    assert any(line.startswith("sunblend:x:65532:65532:") for line in passwd)
    assert len(image.manifest["layers"]) == 2, "a Debian layer, then the sunblend layer"


def test_sunblend_version_runs_in_the_image(image):
    result = image.run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sunblend {VERSION}"


def test_sunblend_plans_a_pool_in_the_image(image):
    pool = image.rootfs / "tmp" / "minimal.yaml"
    shutil.copy(ROOT / "examples" / "minimal.yaml", pool)
    result = image.run("plan", "/tmp/minimal.yaml", "-o", "json", "--at", AT)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["pool"] == "default/minimal"
    assert plan["status"] == "Optimal"
    assert plan["horizon"]["costDollars"] > 0
