"""Building the package compiles the catalogues: an installed copy reads .mo files it was
never given, from a source tree that has none."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(".git", ".venv", "var", "build", "*.egg-info", "__pycache__", "*.mo",
                              ".pytest_cache", ".ruff_cache", "tests", "bench", "recordings", "docs")


def test_a_wheel_built_from_the_sources_installs_compiled_catalogues(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)
    assert not list(src.rglob("*.mo"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(src)],
                   check=True, capture_output=True)
    wheel, = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ivr/i18n/locales/fr/LC_MESSAGES/messages.mo" in names
    assert "ivr/i18n/locales/fr/LC_MESSAGES/messages.po" in names

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--target", str(site), str(wheel)], check=True, capture_output=True)
    mo = site / "ivr" / "i18n" / "locales" / "fr" / "LC_MESSAGES" / "messages.mo"
    assert mo.exists()
    mo.with_suffix(".po").unlink()  # only the compiled catalogue is left to read
    probe = ("from ivr.i18n import language, catalogue; from ivr.i18n import sentences as S; "
             "print(catalogue.LOCALES); print(language('fr-FR').say(S.NOT_HEARD))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, check=True, capture_output=True,
                         text=True, cwd=tmp_path).stdout.splitlines()
    assert out[0].startswith(str(site))
    assert out[1] == "Désolé, je n'ai rien entendu."
