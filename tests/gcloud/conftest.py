from __future__ import annotations

import pytest

from tests.emulator.harness import RunningEmulator
from tests.gcloud.harness import Gcloud, gcloud_environment, require_gcloud


@pytest.fixture(scope="session")
def gcloud(emulator: RunningEmulator, tmp_path_factory: pytest.TempPathFactory) -> Gcloud:
    """The real gcloud against the session's emulator."""
    return Gcloud(require_gcloud(), gcloud_environment(emulator,
                                                       tmp_path_factory.mktemp("gcloud")))
