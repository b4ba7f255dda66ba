"""numba's and matplotlib's caches where the usual folders cannot be written (a read-only home on a cluster)."""

from __future__ import annotations

import os
import subprocess
import sys

SHOW = "import os, scgpcl; print(os.environ.get('NUMBA_CACHE_DIR')); print(os.environ.get('MPLCONFIGDIR'))"


def _env(**changes) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    env.update(changes)
    return env


def test_an_unwritable_home_gets_caches_of_the_users_own_under_tmp(tmp_path):
    # numba raised "cannot cache function '_is_constant_csr_rows': no locator available" on any input with more
    # than 2000 genes when neither the installation nor the home could be written (an HPC review, as 'nobody')
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    env = _env(HOME=str(blocker / "home"), TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    numba, mpl = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True,
                                check=True).stdout.split()
    folder = tmp_path / "tmp" / os.path.basename(os.path.dirname(numba))
    assert numba == str(folder / "numba") and mpl == str(folder / "matplotlib")
    assert folder.name.startswith("scgpcl-caches-") and (folder.stat().st_mode & 0o777) == 0o700


def test_a_writable_home_or_a_setting_of_ones_own_is_left_alone(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    out = subprocess.run([sys.executable, "-c", SHOW], env=_env(HOME=str(home)), capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["None", "None"]
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    out = subprocess.run([sys.executable, "-c", SHOW], env=_env(HOME=str(blocker / "home"), NUMBA_CACHE_DIR="/x",
                                                                MPLCONFIGDIR="/y"),
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["/x", "/y"]
