"""The project is described in pyproject.toml; this only compiles the message catalogues.

Every ivr/i18n/locales/<lang>/LC_MESSAGES/messages.po becomes the messages.mo that is read
at run time, when the package is built or installed: into the wheel (`pip install .`,
`python -m build`), or next to the .po for an editable install (`pip install -e .`).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

LOCALES = Path("ivr") / "i18n" / "locales"


class BuildWithCatalogues(build_py):
    def run(self) -> None:
        super().run()
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        root = Path(__file__).resolve().parent
        for po in sorted((root / LOCALES).glob("*/LC_MESSAGES/*.po")):
            relative = po.relative_to(root).with_suffix(".mo")
            editable = getattr(self, "editable_mode", False)  # the sources are what is imported
            target = root / relative if editable else Path(self.build_lib) / relative
            with po.open("rb") as f:
                catalog = read_po(f, abort_invalid=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as f:
                write_mo(f, catalog, use_fuzzy=False)
            self.announce(f"compiled {po.relative_to(root)} -> {target}", level=2)


setup(cmdclass={"build_py": BuildWithCatalogues})
