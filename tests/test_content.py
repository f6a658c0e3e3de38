"""The alert as content: the NALACC alert's facts in both editions, and clear errors on bad content."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from lxml import html as lxml_html

from newsletter import content, render
from newsletter.config import Config, load_config
from newsletter.errors import NewsletterError

REPO = Path(__file__).resolve().parent.parent
ALERT = REPO / "alerts" / "2011-08-12-secure-communities"

# Every fact of the 2011-08-12 alert (seed: nalacc-action-alert-2011-08-12.txt), as the English
# edition must show it in both parts.
ENGLISH_FACTS = [
    "Chicago, IL",
    "On Friday, August 5, the Immigration and Customs Enforcement (ICE) agency",
    "Department of Homeland Security",
    "“Secure Communities” or “S-Comm.”",
    "broken, obsolete and inhumane",
    "To read the full press release, please click here",
    "Take Action NOW!",
    "NALACC will join the following national actions and encourages allies to do the same.",
    "11 am on Tuesday, August 16th",
    "national headquarters of the Obama for America campaign office in Chicago",
    "similar deliveries in other cities that same Tuesday, the 16th",
    "Chicago Cultural Center, 79 E. Washington",
    "march to Obama’s campaign HQ",
    "Carlos Roa",
    "(305) 744-1951",
    "sign the petition asking Obama to end the S-Comm program immediately!",
    "National Day Laborer Organizing Network (NDLON)",
    "STOP-INSECURE-COMUNITIES",
    "NALACC member organizations such as Centro Presente",
    "ICE community hearings",
    "Sarahi Uribe",
    "Secure Communities Brings Insecurity: Latino Immigrant Communities Reject President "
    "Obama’s Deportation Scheme",
    "has been harmful to community & police relations and it should end once and for all",
    "Forward this link",
    "Forward this message to a friend",
    "Reciba los correos en español",
    "NALACC aspires to become an entity recognized for its ability to articulate the challenges "
    "faced by transnational immigrant communities, as well as viable solutions to those challenges.",
    "Don't forget to visit our new NALACC Facebook!",
    "© Copyright 2009 NALACC",
    "Tuesday, August 16, 2011 at 11:00 AM (Central Time)",  # the event block, localised
    # What the rebuild had dropped from the top of the source, and its tense.
    "The National Alliance of Latin American and Caribbean Communities (NALACC)",
    "which actually leads to insecurity and fear in immigrant communities",
    "They further call on Obama to end his massive program of deportations.",
    "Please see below for more and sign on to the online petition",
    "join us for a protest here in Chicago next Tuesday, August 16th at 11:00 AM",
    "are planning to collect and deliver thousands of petitions",
]
SPANISH_FACTS = [
    "Chicago, IL",
    "“Comunidades Seguras”",
    "El viernes 5 de agosto",
    "Servicio de Inmigración y Control de Aduanas (ICE)",
    "¡Actúe ahora!",
    "a las 11 a. m. del martes 16 de agosto",
    "Obama for America",
    "Chicago Cultural Center, 79 E. Washington",
    "Carlos Roa",
    "(305) 744-1951",
    "Red Nacional de Jornaleros y Jornaleras (NDLON",
    "STOP-INSECURE-COMUNITIES",
    "Centro Presente",
    "Sarahi Uribe",
    "Reenvíe este enlace",
    "Reenvíe este mensaje a un amigo o amiga",
    "Get emails in English",
    "¡No olvide visitar nuestra nueva página de Facebook de NALACC!",
    "© Copyright 2009 NALACC",
    "martes 16 de agosto de 2011 a las 11:00 a. m. (hora del centro)",
    "La Alianza Nacional de Comunidades Latinoamericanas y Caribeñas (NALACC",
    "que en realidad siembra inseguridad y miedo en las comunidades inmigrantes",
    "También le pide que ponga fin a su programa masivo de deportaciones.",
    "firme la petición en línea",
    "acompáñenos en la protesta aquí en Chicago el próximo martes 16 de agosto",
    "planean reunir y entregar miles de peticiones",
    # the same facts as the English edition, not only the names
    "Departamento de Seguridad Nacional",
    "sede nacional de la campaña Obama for America en Chicago",
    "entregas similares en otras ciudades ese mismo martes 16",
    "Para leer el comunicado de prensa completo",
    "firme la petición que le pide a Obama poner fin al programa S-Comm de inmediato",
    "audiencias comunitarias del ICE",
    "NALACC aspira a ser reconocida por su capacidad de dar voz a los retos que enfrentan las "
    "comunidades inmigrantes transnacionales y de proponer soluciones viables.",
    "Comunidades Seguras trae inseguridad",
]
# Blog furniture and garble of the archived copy that must not come back.
NOT_IN_ANY = [
    "Pilsen",
    "tObamaProtest",
    "graphic",
    "to ended",
    "Secured Communities",
    "Friday, August 12",
    "newsblog",
    "National Video strike",
    "COMUNITIES (1)",
    "contact Carlos Roa, at or",
    'to end the "Secure Communities" program...',  # the blog post's headline
    # Facts the rebuild had invented (the source never says they gather, nor joins the actions).
    "We gather",
    "Nos reunimos",
    "Protest and petition delivery",
    "Protesta y entrega de peticiones",
]


def visible_text(html: str) -> str:
    """What a reader sees: text of the body (no preheader), whitespace collapsed."""
    root = lxml_html.fromstring(html)
    for el in root.xpath('//*[contains(@class, "preheader")] | //style | //title'):
        el.drop_tree()
    return " ".join(root.text_content().split())


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(REPO / "newsletter.toml")


@pytest.fixture(scope="module")
def editions(cfg: Config) -> dict[str, render.Edition]:
    return render.render_editions(cfg, content.load_alert(cfg, ALERT))


def test_alert_loads_with_its_facts(cfg: Config) -> None:
    alert = content.load_alert(cfg, ALERT)
    assert alert.id == "2011-08-12-secure-communities"
    assert alert.languages == ("es", "en")
    assert str(alert.date) == "2011-08-12"
    ev = alert.events["chicago-protest"]
    assert ev.start is not None and ev.start.isoformat() == "2011-08-16T11:00:00-05:00"
    assert ev.place == "Chicago Cultural Center"
    assert alert.contacts["carlos-roa"].tel == "tel:+13057441951"


@pytest.mark.parametrize("part", ["html", "text"])
def test_english_edition_keeps_every_fact(editions: dict[str, render.Edition], part: str) -> None:
    ed = editions["en"]
    shown = visible_text(ed.html) if part == "html" else flat(ed.text)
    missing = [f for f in ENGLISH_FACTS if flat(f) not in shown and not forward_link(f, part)]
    assert missing == []
    if part == "text":  # without the forward page, the text says how instead of a mailto: line
        assert "To forward this alert, use your mail program's Forward button." in shown


@pytest.mark.parametrize("part", ["html", "text"])
def test_spanish_edition_keeps_every_fact(editions: dict[str, render.Edition], part: str) -> None:
    ed = editions["es"]
    shown = visible_text(ed.html) if part == "html" else flat(ed.text)
    missing = [f for f in SPANISH_FACTS if flat(f) not in shown and not forward_link(f, part)]
    assert missing == []
    if part == "text":
        assert "Para reenviar esta alerta, use el botón Reenviar de su programa de correo." in shown


FORWARD_WORDS = {
    "Forward this link",
    "Forward this message to a friend",
    "Reenvíe este enlace",
    "Reenvíe este mensaje a un amigo o amiga",
}


def forward_link(fact: str, part: str) -> bool:
    """The forward links' words: in the text part only with a forward page (a base URL)."""
    return part == "text" and fact in FORWARD_WORDS


def test_links_the_copy_lost_are_named_example_settings(
    editions: dict[str, render.Edition],
) -> None:
    for ed in editions.values():
        for url in (
            "https://example.org/set-links.press-release-in-alert.toml",
            "https://example.org/set-links.petition-in-alert.toml",
            "https://example.org/set-links.ice-hearings-in-alert.toml",
            "https://example.org/set-org.facebook_url-in-newsletter.toml",
            "mailto:set-contacts.carlos-roa.email-in-alert.toml@example.org",
            "mailto:set-contacts.sarahi-uribe.email-in-alert.toml@example.org",
        ):
            assert f'href="{url}"' in ed.html, (ed.lang, url)
        assert "EXAMPLE: set [sender] postal_address" in ed.text


def word_counts(text: str, words: set[str]) -> int:
    return sum(1 for w in re.findall(r"[a-záéíóúñü]+", text.lower()) if w in words)


def test_spanish_edition_is_spanish(editions: dict[str, render.Edition]) -> None:
    spanish = {"el", "la", "los", "las", "de", "del", "que", "y", "para", "por", "con", "una"}
    english = {"the", "and", "of", "to", "that", "with", "for", "is", "are", "this"}
    for part in (visible_text(editions["es"].html), editions["es"].text):
        assert word_counts(part, spanish) > 10 * max(1, word_counts(part, english))
        assert "Take Action" not in part and "Sign the petition" not in part
    for part in (visible_text(editions["en"].html), editions["en"].text):
        assert word_counts(part, english) > 5 * max(1, word_counts(part, spanish))


@pytest.mark.parametrize("lang", ["es", "en"])
def test_no_blog_comments_or_garble(editions: dict[str, render.Edition], lang: str) -> None:
    ed = editions[lang]
    for bad in NOT_IN_ANY:
        assert bad not in ed.html and bad not in ed.text, bad


def test_subject_and_preheader_per_language(editions: dict[str, render.Edition]) -> None:
    assert "Comunidades Seguras" in editions["es"].subject
    assert "Secure Communities" in editions["en"].subject
    assert editions["es"].preheader.startswith("NALACC le pide al presidente Obama")
    assert "August 16th at 11 am" in editions["en"].preheader


# --- example values and markers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "https://example.org/set-links.petition-in-alert.toml",
        "someone@example.org",
        "EXAMPLE: set [sender] postal_address",
        "https://www.example.com/x",
        "http://example.net",
        "https://alerts.example/a",
    ],
)
def test_example_values_are_recognised(value: str) -> None:
    assert content.is_example_value(value)


@pytest.mark.parametrize(
    "value",
    ["https://nalacc.org/petition", "carlos@nalacc.org", "79 E. Washington", "", "myexample.org"],
)
def test_real_values_are_not_examples(value: str) -> None:
    assert not content.is_example_value(value)


def test_write_marker_regex() -> None:
    assert content.WRITE_MARK_RE.findall("a [[WRITE: headline]] b [[WRITE: x]]") == [
        "[[WRITE: headline]]",
        "[[WRITE: x]]",
    ]
    assert not content.WRITE_MARK_RE.search("[[NAME]] [WRITE: x]")


# --- bad content: one clear error naming file and line ----------------------------------------


@pytest.fixture
def alert_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "alerts" / ALERT.name
    shutil.copytree(ALERT, dst)
    return dst


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def load_error(alert_dir: Path) -> str:
    with pytest.raises(NewsletterError) as err:
        content.load_alert(Config(root=alert_dir.parent.parent), alert_dir)
    msg = err.value.format_message()
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_missing_front_matter_key(alert_copy: Path) -> None:
    edit(alert_copy / "en.md", "preheader = ", "pre_header = ")
    msg = load_error(alert_copy)
    assert re.search(r"en\.md:\d+: ", msg) and "preheader" in msg


def test_unknown_block_names_file_line_and_known_blocks(alert_copy: Path) -> None:
    edit(alert_copy / "es.md", "::: petition", "::: petitoin")
    msg = load_error(alert_copy)
    assert re.search(r"es\.md:30: unknown block '::: petitoin'", msg)
    assert "::: petition" in msg and "::: event <id>" in msg


def test_block_with_unknown_event_id(alert_copy: Path) -> None:
    edit(alert_copy / "en.md", "::: event chicago-protest", "::: event chicago")
    msg = load_error(alert_copy)
    assert re.search(r"en\.md:16: ::: event chicago", msg) and "chicago-protest" in msg


def test_bad_toml_in_alert_names_line(alert_copy: Path) -> None:
    edit(alert_copy / "alert.toml", 'place = "Chicago Cultural Center"', "place = Chicago Cultural")
    msg = load_error(alert_copy)
    assert re.search(r"alert\.toml:26: .*Fix the TOML syntax", msg), msg


def test_bad_toml_in_front_matter_names_line_in_the_md_file(alert_copy: Path) -> None:
    edit(alert_copy / "en.md", 'headline = "', 'headline = "unterminated\nx = "')
    msg = load_error(alert_copy)
    assert re.search(r"en\.md:4: ", msg), msg


def test_unknown_link_name(alert_copy: Path) -> None:
    edit(alert_copy / "en.md", "(link:press-release)", "(link:press)")
    msg = load_error(alert_copy)
    assert re.search(r"en\.md:20: \[\.\.\]\(link:press\) names no link", msg), msg


def test_missing_front_matter(alert_copy: Path) -> None:
    path = alert_copy / "en.md"
    path.write_text(path.read_text(encoding="utf-8").replace("+++\n", "", 1), encoding="utf-8")
    assert "en.md:1: the file must start with a +++ line" in load_error(alert_copy)


def test_missing_language_file(alert_copy: Path) -> None:
    (alert_copy / "es.md").unlink()
    assert "es.md: missing" in load_error(alert_copy)


def test_unknown_key_in_alert_toml(alert_copy: Path) -> None:
    edit(alert_copy / "alert.toml", "languages = ", "langauges = ")
    msg = load_error(alert_copy)
    assert "alert.toml:5: unknown key 'langauges'" in msg


def test_event_without_timezone(alert_copy: Path) -> None:
    edit(alert_copy / "alert.toml", 'timezone = "America/Chicago"', 'timezone = "Chicago"')
    msg = load_error(alert_copy)
    assert "alert.toml:23:" in msg and "IANA" in msg


def test_raw_html_in_markdown_is_text_not_markup(alert_copy: Path) -> None:
    edit(alert_copy / "en.md", "Take Action NOW!", "Take <script>x()</script> NOW!")
    alert = content.load_alert(Config(root=alert_copy.parent.parent), alert_copy)
    html = "".join(p.html for p in alert.texts["en"].parts if p.kind == "markdown")
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_markdown_text_shows_links_as_urls() -> None:
    tokens = content._MD.parse(
        "# Title\n\nRead [this](https://a.example.org/x) now.\n\n- one\n- two\n"
    )
    assert content.markdown_text(tokens) == (
        "TITLE\n=====\n\nRead this <https://a.example.org/x> now.\n\n- one\n\n- two"
    )


# --- newsletter new ---------------------------------------------------------------------------


def test_new_creates_every_block_marked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = Config(root=tmp_path)
    folder = content.run_new(cfg, "2026-12-04-dream-act")
    assert folder == tmp_path / "alerts" / "2026-12-04-dream-act"
    assert sorted(p.name for p in folder.iterdir()) == ["alert.toml", "en.md", "es.md"]
    alert = content.load_alert(cfg, folder)
    for lang in ("es", "en"):
        blocks = {p.block for p in alert.texts[lang].parts if p.kind == "block"}
        assert blocks == set(content.BLOCKS), lang
        assert content.WRITE_MARK_RE.search(alert.texts[lang].subject)
    assert "newsletter check" in capsys.readouterr().out


def test_new_then_render_shows_the_markers(tmp_path: Path) -> None:
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shutil.copytree(REPO / "locale", tmp_path / "locale")
    cfg = Config(root=tmp_path)
    cfg.sender.unsubscribe_mailto = "unsubscribe@example.org"
    folder = content.run_new(cfg, "next-week")
    for lang, ed in render.render_editions(cfg, folder).items():
        for part in (ed.html, ed.text, ed.subject):
            assert content.WRITE_MARK_RE.search(part), lang
        assert "[[WRITE: date and time" in ed.text  # the event's start, still to write
        # Markers reach the HTML whole (no Markdown markup splits one), so check can find them.
        source = (folder / f"{lang}.md").read_text(encoding="utf-8").split("+++")[2]
        for mark in content.WRITE_MARK_RE.findall(source):
            assert mark in ed.html, mark
        assert len(content.WRITE_MARK_RE.findall(ed.text)) >= 10


def test_new_refuses_an_existing_folder(tmp_path: Path) -> None:
    cfg = Config(root=tmp_path)
    content.run_new(cfg, "a1")
    before = (tmp_path / "alerts" / "a1" / "en.md").read_text()
    with pytest.raises(NewsletterError, match="already exists"):
        content.run_new(cfg, "a1")
    assert (tmp_path / "alerts" / "a1" / "en.md").read_text() == before


@pytest.mark.parametrize("bad", ["Dream-Act", "dream act", "../x", "-x", "x-", "a--b", "", "ñu"])
def test_new_validates_the_id(tmp_path: Path, bad: str) -> None:
    with pytest.raises(NewsletterError, match="lowercase letters, digits and hyphens"):
        content.run_new(Config(root=tmp_path), bad)
    assert not (tmp_path / "alerts").exists() or not any((tmp_path / "alerts").iterdir())


def test_front_matter_events_not_a_table(alert_copy: Path) -> None:
    text = (alert_copy / "en.md").read_text(encoding="utf-8")
    table = text[text.index("[events.chicago-protest]") : text.index("+++", 4)]
    edit(alert_copy / "en.md", table, 'events = "x"\n')
    msg = load_error(alert_copy)
    assert re.search(r"en\.md:7: \[events\.<id>\] tables expected", msg), msg


@pytest.mark.parametrize("lang", ["es", "en"])
def test_the_ask_and_its_petition_link_come_first(
    editions: dict[str, render.Edition], lang: str
) -> None:
    """The source's opening ask ("sign on to the online petition", linked) is read before the
    press release, within a phone's first screens (~900 characters of visible text)."""
    ed = editions[lang]
    root = lxml_html.fromstring(ed.html)
    for el in root.xpath('//*[contains(@class, "preheader")] | //style | //title'):
        el.drop_tree()
    petition = content.load_alert(load_config(REPO / "newsletter.toml"), ALERT).links["petition"]
    text = ""
    for el in root.iter():
        if el.tag == "a" and el.get("href") == petition:
            break
        text += (el.text or "") + (el.tail or "") if el.tag != "a" else (el.text or "")
    else:
        pytest.fail("no link to the petition")
    seen = " ".join(text.split())
    assert "Chicago, IL –" not in seen and len(seen) < 900, len(seen)


@pytest.mark.parametrize("lang", ["es", "en"])
def test_the_event_card_is_the_protest_only(editions: dict[str, render.Edition], lang: str) -> None:
    """The source keeps the protest (Chicago Cultural Center) and the petition delivery (Obama for
    America headquarters) apart: the one card is the protest, and says nothing of a delivery."""
    root = lxml_html.fromstring(editions[lang].html)
    cards = root.xpath('//table[contains(@class, "event")]')
    assert len(cards) == 1
    card = " ".join(cards[0].text_content().split())
    assert "Chicago Cultural Center, 79 E. Washington" in card
    for word in ("Obama for America", "petition", "petici", "deliver", "entreg"):
        assert word not in card, word
