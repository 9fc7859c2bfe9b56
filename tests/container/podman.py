"""Podman for the container tests: the tools, a configuration this machine accepts, the
stand-in base image, and the production image built from a copy of the repository.

Why these choices (measured on these machines: 2-core Debian bookworm, root, podman 4.3,
a kernel with hybrid cgroups v1/v2):

- runc as the runtime: crun (apt's first choice for podman) stops with "cgroups in hybrid
  mode not supported".
- ``default_ulimits``: with podman's defaults runc fails ("error setting rlimit type 7:
  operation not permitted"); nofile must stay within the hard limit (``ulimit -Hn``), and
  nproc at most 32768, whatever ``ulimit -Hu`` says (more fails the same way, type 6).
- Overlay storage, podman's default: it works on this ext4, and vfs is far slower (a cold
  build 3 min against 71 s; a container start 26 s against 0.6 s).
- ``--network=host`` for builds and runs: the containers reach the emulator stack on
  127.0.0.1, pip in the build reaches PyPI by the machine's own route (there is no proxy
  variable to pass), and no bridge, iptables or network backend is involved.
- No registry: the base image is a stand-in made by ``base_image.sh``; builds use
  ``--pull=never``.

The configuration is written at test time with this machine's limits, and reaches podman
through ``CONTAINERS_CONF``: nothing under /etc is changed.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
IMAGE_REPO = "localhost/enqueuer"
TOOLS = ("podman", "runc", "mmdebstrap")  # each the Debian package of the same name
INSTALL = f"sudo apt-get install -y --no-install-recommends {' '.join(TOOLS)}"
BASE_TIMEOUT_S = 600
BUILD_TIMEOUT_S = 600
NPROC_MAX = 32768  # more is refused (EPERM) on these machines, whatever the hard limit says
NOFILE_MAX = 1 << 16  # plenty for a server; never more than the hard limit


def require_tools() -> None:
    """Fail (never skip) when a tool is missing, with the command that installs it."""
    missing = [cmd for cmd in TOOLS if not (shutil.which(cmd) or Path(f"/usr/sbin/{cmd}")
                                            .is_file())]
    if missing:
        pytest.fail(f"the container tests need {', '.join(missing)}: {INSTALL} "
                    "(`make test` installs them when run as root)", pytrace=False)


def containers_conf(folder: Path) -> Path:
    """A containers.conf for this machine: runc, and ulimits it accepts."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], NOFILE_MAX)
    nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = NPROC_MAX if nproc_hard == resource.RLIM_INFINITY else min(nproc_hard, NPROC_MAX)
    path = folder / "containers.conf"
    path.write_text(
        "# Written by tests/container/podman.py for this machine (see its docstring).\n"
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n\n'
        "[engine]\n"
        'runtime = "runc"\n'
    )
    return path


@dataclass(frozen=True)
class Podman:
    env: Mapping[str, str]

    @classmethod
    def for_tests(cls, folder: Path) -> Podman:
        require_tools()
        return cls({**os.environ, "CONTAINERS_CONF": str(containers_conf(folder))})

    def run(self, *args: str, timeout: float = 60, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(["podman", *args], capture_output=True, text=True,
                             timeout=timeout, env=dict(self.env), stdin=subprocess.DEVNULL)
        if check and out.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {out.returncode}:\n"
                                 f"{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
        return out

    def image_exists(self, image: str) -> bool:
        return self.run("image", "exists", image, check=False).returncode == 0

    def image_id(self, image: str) -> str:
        return self.run("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()

    def ensure_base_image(self) -> str:
        """The stand-in python:3.11-slim-bookworm (built once, kept); its image ID."""
        out = subprocess.run([str(HERE / "base_image.sh"), BASE_IMAGE], capture_output=True,
                             text=True, timeout=BASE_TIMEOUT_S, env=dict(self.env),
                             stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise AssertionError(f"tests/container/base_image.sh failed:\n{out.stderr[-5000:]}")
        return self.image_id(BASE_IMAGE)

    def build(self, context: Path, tag: str) -> str:
        """``podman build`` of the unchanged Dockerfile, unless ``tag`` exists; the tag."""
        if not self.image_exists(tag):
            self.run("build", "--pull=never", "--network=host", "--quiet", "-t", tag,
                     "-t", f"{IMAGE_REPO}:test", str(context), timeout=BUILD_TIMEOUT_S)
            self.forget_old_builds(keep=tag)
        return tag

    def forget_old_builds(self, keep: str) -> None:
        """Untag the images of earlier runs: each change to the repository makes one (all
        but the code layer shared). Those of the last hour stay, as a run going on beside
        this one may be using them; the build cache (untagged layers) stays too."""
        listed = self.run("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                          f"reference={IMAGE_REPO}:test-*", "--filter", "until=1h").stdout
        old = [n for n in listed.split() if n.startswith(f"{IMAGE_REPO}:test-") and n != keep]
        if old:
            # An image a container still uses is refused, and kept: that is fine.
            self.run("rmi", *old, check=False)

    def remove(self, names: Sequence[str]) -> None:
        if names:
            self.run("rm", "--force", "--time", "5", *names, check=False, timeout=60)


def copy_repository(dest: Path, extra: Mapping[str, str] | None = None) -> Path:
    """A build context: the repository's files as ``docker build .`` would get them in a
    fresh clone (tracked files, and new ones git does not ignore), plus ``extra`` files
    (path: text) placed in it. The working tree itself is never written to."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is skipped
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)  # keeps the entrypoint's executable bit
    for name, text in (extra or {}).items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return dest


def context_tag(context: Path, base_id: str) -> str:
    """A tag naming what the image is built from: every file of the context (path, mode,
    bytes) and the base image. Same inputs, same tag: the build is skipped."""
    digest = hashlib.sha256(base_id.encode())
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(f"\0{path.relative_to(context)}\0{path.stat().st_mode:o}\0".encode())
        digest.update(path.read_bytes())
    return f"{IMAGE_REPO}:test-{digest.hexdigest()[:16]}"
