"""Why the wheel ships compiled .mo catalogs: loading the packaged catalogs, .po versus .mo.

Each figure is a fresh process (as each `newsletter` command is) that loads the translations of
es and en, messages and web, through newsletter.i18n: once from the .po files (parsed and compiled
in memory, as a checkout or a site's own catalogs are), once from .mo files compiled as
hatch_build.py does. Prints the median and best of N runs of each, in milliseconds.

    .venv/bin/python benchmarks/bench_catalogs.py [N]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import sys, time
from pathlib import Path
from newsletter import i18n, resources
from newsletter.config import Config
root = Path(sys.argv[1])
resources.packaged_root = lambda: root
cfg = Config(root=root / "site")
t = time.perf_counter()
for lang in ("es", "en"):
    for domain in ("messages", "web"):
        i18n.translations(cfg, lang, domain).gettext("Unsubscribe")
print((time.perf_counter() - t) * 1000)
"""


def compile_mo(root: Path) -> None:
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    for po in root.glob("locale/*/LC_MESSAGES/*.po"):
        with po.open("rb") as fh:
            catalog = read_po(fh, locale=po.parts[-3], abort_invalid=True)
        with po.with_suffix(".mo").open("wb") as fh:
            write_mo(fh, catalog)


def run(root: Path, n: int) -> list[float]:
    return [
        float(
            subprocess.run(
                [sys.executable, "-c", CHILD, str(root)],
                capture_output=True,
                text=True,
                check=True,
                cwd=REPO,
            ).stdout
        )
        for _ in range(n)
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with tempfile.TemporaryDirectory() as tmp:
        po_root, mo_root = Path(tmp, "po"), Path(tmp, "mo")
        for root in (po_root, mo_root):
            shutil.copytree(REPO / "locale", root / "locale")
            (root / "site").mkdir()
        compile_mo(mo_root)
        for name, root in ((".po (parse + compile)", po_root), (".mo (wheel)", mo_root)):
            ms = run(root, n)
            print(
                f"4 catalogs from {name:22} median {statistics.median(ms):6.1f} ms, "
                f"best {min(ms):6.1f} ms ({n} fresh processes)"
            )


if __name__ == "__main__":
    main()
