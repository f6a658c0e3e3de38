"""Wheel build step: the packaged defaults into newsletter/_data/, catalogs compiled to .mo.

The repository keeps templates/, locale/, the example alert, the sample list and newsletter.toml at
its root (a checkout is itself a site: `make demo` runs there); the wheel carries them under
newsletter/_data/ in the same layout, where newsletter/resources.py finds them. An editable install
gets none of this: resources.py reads the checkout's own folders, so an edit shows at once.

The .mo files: parsing and compiling the four .po catalogs costs 24 ms (median) in a process that
loads them (serve; build and send load two; check reads the .po anyway, for missing strings),
loading the .mo files 2 ms (benchmarks/bench_catalogs.py). Only the packaged catalogs are compiled,
here, so a .mo is never older than its .po; a site's own catalogs stay .po, compiled in memory when
loaded (newsletter/i18n.py), so there is nothing for an editor to forget to rebuild.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

DATA = "newsletter/_data"
# Repository path -> its place under DATA. Only the 2011 alert: it is the example `init` offers.
PACKAGED = (
    "templates",
    "locale",
    "alerts/2011-08-12-secure-communities",
    "recipients/sample.csv",
    "newsletter.toml",
)


class CustomBuildHook(BuildHookInterface):
    """hatchling's hook: adds PACKAGED and the compiled catalogs to a (non-editable) wheel."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        root = Path(self.root)
        for rel in PACKAGED:
            build_data["force_include"][str(root / rel)] = f"{DATA}/{rel}"
        self._tmp = Path(tempfile.mkdtemp(prefix="newsletter-mo-"))
        for po in sorted((root / "locale").glob("*/LC_MESSAGES/*.po")):
            rel_mo = po.relative_to(root).with_suffix(".mo")
            with po.open("rb") as fh:
                catalog = read_po(fh, locale=rel_mo.parts[1], abort_invalid=True)
            mo = self._tmp / rel_mo
            mo.parent.mkdir(parents=True, exist_ok=True)
            with mo.open("wb") as fh:
                write_mo(fh, catalog)
            build_data["force_include"][str(mo)] = f"{DATA}/{rel_mo.as_posix()}"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
