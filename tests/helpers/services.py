"""Tests that need a service or tool the machine may lack (a SLURM cluster, a browser, a server).

Such a test asks :func:`require_service` before using the service. Where the service is missing the
test is skipped with one line saying what is missing and how to run it; where the service is named
in ``ACCVIT_MED_REQUIRE`` (comma-separated, e.g. ``slurm,chromium``) it fails instead, so CI, which
installs what these tests need, cannot lose them to a skip. The test suite itself never installs
anything and never needs root.

    missing = missing_commands("slurmctld", "munged")   # or any check of one's own
    require_service("slurm", missing, how="install the slurm-wlm and munge packages, then sudo make test-slurm")

A new service gets its entry in :data:`SERVICES` (a name in ``ACCVIT_MED_REQUIRE`` that is not
there stops the run at once, so a typo cannot silently require nothing).
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

import pytest

REQUIRE_ENV = "ACCVIT_MED_REQUIRE"
# name -> what it is, for messages; the name is what ACCVIT_MED_REQUIRE lists.
SERVICES = {
    "slurm": "a one-node SLURM cluster on this machine (scripts/slurm-local.sh)",
    "chromium": "a headless Chromium and its chromedriver (/usr/bin/chromium, /usr/bin/chromedriver)",
}


def required_services(environ: Optional[dict] = None) -> set[str]:
    """The services named in ``ACCVIT_MED_REQUIRE``; a ValueError names any we do not know."""
    value = (os.environ if environ is None else environ).get(REQUIRE_ENV, "")
    names = {name.strip().lower() for name in value.split(",") if name.strip()}
    unknown = sorted(names - set(SERVICES))
    if unknown:
        raise ValueError(f"{REQUIRE_ENV} names unknown service(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(SERVICES))}")
    return names


# Daemons live in sbin folders, which Debian leaves off an ordinary user's PATH.
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def missing_commands(*commands: str) -> Optional[str]:
    """``"a, b not installed"`` for the commands neither on PATH nor in an sbin folder; None when all are there."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    absent = [command for command in commands if shutil.which(command, path=search) is None]
    return f"{', '.join(absent)} not installed" if absent else None


def require_service(name: str, missing: Optional[str], how: str) -> None:
    """Return when ``missing`` is None; otherwise skip the test (fail it, if ``name`` is required).

    Args:
        name: the service's key in :data:`SERVICES`.
        missing: why the service cannot be used here (one phrase), or None when it can.
        how: what a person does to run these tests, e.g. the install command and the make target.
    """
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; add it to SERVICES in {__name__}")
    if missing is None:
        return
    message = f"{name} tests need {SERVICES[name]}: {missing}; to run them: {how}"
    message = " ".join(message.split())  # one line in pytest's summary
    if name in required_services():
        pytest.fail(f"{message} ({REQUIRE_ENV} requires {name})", pytrace=False)
    pytest.skip(message)
