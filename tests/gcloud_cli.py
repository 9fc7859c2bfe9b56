"""The real gcloud's command tree, to check that a command Enqueuer prints would parse.

gcloud ships its whole command tree (commands, flags, and the choices of enumerated flags) as
``data/cli/gcloud_completions.py`` in the SDK; reading it checks a printed command against
the installed gcloud in milliseconds, with no credentials and no network.
"""

from __future__ import annotations

import functools
import importlib.util
import shlex
import shutil
from pathlib import Path
from typing import Any

INSTALL_HINT = ("gcloud is not installed: install the Google Cloud CLI "
                "(https://cloud.google.com/sdk/docs/install, or `apt-get install "
                "google-cloud-cli` from Google's Debian repository)")


@functools.cache
def command_tree() -> dict[str, Any]:
    gcloud = shutil.which("gcloud")
    assert gcloud, INSTALL_HINT
    tree = Path(gcloud).resolve().parent.parent / "data" / "cli" / "gcloud_completions.py"
    assert tree.is_file(), f"{tree} is missing: this gcloud has no static command tree"
    spec = importlib.util.spec_from_file_location("gcloud_completions", tree)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.STATIC_COMPLETION_CLI_TREE


def check_command(command: str | list[str]) -> list[str]:
    """Fail unless ``command`` (``gcloud …``) names a gcloud command and only its flags,
    with a valid choice for enumerated ones; the command's path (``["run", "deploy"]``)."""
    words = shlex.split(command) if isinstance(command, str) else list(command)
    assert words and words[0] == "gcloud", f"not a gcloud command: {command}"
    tree = command_tree()
    node, path = tree, []
    for word in words[1:]:
        if word in node["commands"]:
            node = node["commands"][word]
            path.append(word)
        else:
            break
    assert path and not node["commands"], (
        f"`gcloud {' '.join(path)}` is not a command (it has sub-commands "
        f"{sorted(node['commands'])[:8]}): {command}")
    flags = {**tree["flags"], **node["flags"]}
    for word in words[1 + len(path):]:
        if not word.startswith("--"):
            continue
        name, _, value = word.partition("=")
        kind = flags.get(name)
        if kind is None and name.startswith("--no-"):
            kind = flags.get("--" + name[5:])
            assert kind == "bool", f"{name} is not a flag of gcloud {' '.join(path)}"
            continue
        assert kind is not None, f"{name} is not a flag of gcloud {' '.join(path)}: {command}"
        if isinstance(kind, list):
            assert value in kind, f"{word}: gcloud {' '.join(path)} takes one of {kind}"
    return path
