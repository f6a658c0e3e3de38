"""The Spanish a member reads: one register (usted), one word for unsubscribing, one style of
quotation marks — in the email, the public pages, the forward intro and the form labels."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from newsletter import content
from newsletter.config import load_config

REPO = Path(__file__).resolve().parent.parent
ALERT = REPO / "alerts" / "2011-08-12-secure-communities"

# Verbs and pronouns of tú (imperatives, present, possessives) a translator slips into.
TU = re.compile(
    r"(?i)\b(tu|tus|te|ti|contigo|eres|tienes|puedes|quieres|prefieres|recibirás|volverás|"
    r"pulsa|escribe|elige|corrige|vuelve|recarga|usa|lee|reenvía|inténtalo|escríbenos|acórtala|"
    r"cópialo|llegaste|diste|darte|tenerte)\b"
)


def spanish_strings() -> list[tuple[str, str]]:
    """(where, text) of every Spanish string the tool shows: catalogs, the alert, `new`'s text."""
    out = []
    for domain in ("messages", "web"):
        path = REPO / "locale" / "es" / "LC_MESSAGES" / f"{domain}.po"
        with path.open("rb") as fh:
            for msg in read_po(fh):
                strings = msg.string if isinstance(msg.string, tuple) else (msg.string,)
                out += [(f"{path.name}:{msg.lineno}", s) for s in strings if msg.id and s]
    alert = content.load_alert(load_config(REPO / "newsletter.toml"), ALERT)
    t = alert.texts["es"]
    for key in ("subject", "preheader", "headline", "subtitle"):
        out.append((f"es.md {key}", getattr(t, key)))
    for eid, ev in t.events.items():
        out += [(f"es.md [events.{eid}]", v) for v in ev.values()]
    out += [(f"es.md:{p.line}", p.text) for p in t.parts if p.kind == "markdown"]
    out.append(("newsletter new es.md", content.NEW_TEXT["es"]))
    return out


@pytest.mark.parametrize("where,text", spanish_strings())
def test_usted_everywhere(where: str, text: str) -> None:
    assert not TU.search(text), (where, text)


def test_one_word_for_unsubscribing_and_one_quotation_style() -> None:
    every = spanish_strings()
    assert not [w for w, s in every if re.search(r"(?i)dar(se|te)? de baja|\bbaja\b", s)]
    words = [(w, s) for w, s in every if w != "newsletter new es.md"]  # that one is TOML
    assert not [w for w, s in words if "«" in s or "»" in s or '"' in s]
    assert any(s == "Cancelar la suscripción" for _, s in every)


def test_the_words_the_issue_asked_for() -> None:
    strings = dict((s, w) for w, s in spanish_strings())
    assert "Correo electrónico de su amigo/a %(n)s" in strings
    assert "hora del centro" in strings
    es = (ALERT / "es.md").read_text(encoding="utf-8")
    assert "## ¡Actúe ahora!" in es and "Tome acción" not in es
