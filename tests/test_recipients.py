"""Recipient CSVs as people really save them: encodings, delimiters, messy headers, bad rows."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.contacts import Contacts
from newsletter.errors import NewsletterError
from newsletter.recipients import check_address, clean_text, parse_language, read_csv
from newsletter.suppressions import Suppressions

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, data: str | bytes, name: str = "list.csv") -> Path:
    p = tmp_path / name
    if isinstance(data, str):
        p.write_bytes(data.encode("utf-8"))
    else:
        p.write_bytes(data)
    return p


def emails(report) -> list[str]:
    return [r.email for r in report.recipients]


# --- the shipped sample ------------------------------------------------------------------------


def test_sample_is_all_valid_bilingual_and_accented():
    report = read_csv(REPO / "recipients" / "sample.csv")
    assert not report.problems and not report.duplicates and not report.warnings
    assert 15 <= len(report.recipients) <= 25
    langs = report.by_language()
    assert langs["es"] >= 5 and langs["en"] >= 5
    names = {r.name for r in report.recipients}
    assert "José Ñúñez" in names
    for r in report.recipients:
        # RFC 2606 domains only: the demo sends to this file.
        assert r.email.split("@")[1] in ("example.org", "example.com", "example.net")
        assert r.fields["city"]


# --- encodings ---------------------------------------------------------------------------------


def test_utf8_with_bom_reads_the_email_header(tmp_path):
    p = write(tmp_path, "\ufeffemail,name\njose@example.org,José Ñúñez\n")
    report = read_csv(p)
    assert emails(report) == ["jose@example.org"]
    assert report.recipients[0].name == "José Ñúñez"
    assert not report.warnings


def test_cp1252_is_read_with_a_warning_naming_the_file(tmp_path):
    # Excel on Windows: é ñ ú and the en dash (0x96, which Latin-1 would turn into a control char)
    p = write(tmp_path, b"email;name\r\njose@example.org;Jos\xe9 \x96 N\xfa\xf1ez\r\n")
    report = read_csv(p)
    assert report.recipients[0].name == "José – Núñez"
    assert len(report.warnings) == 1
    assert str(p) in report.warnings[0] and "cp1252" in report.warnings[0]


def test_bytes_cp1252_leaves_undefined_fall_back_to_latin1(tmp_path):
    p = write(tmp_path, b"email,name\nana@example.org,Ana\x81\xe1\n")
    report = read_csv(p)
    assert report.recipients[0].name == "Ana á"  # the C1 control became a space, then trimmed
    assert "Latin-1" in report.warnings[0]


def test_utf16_unicode_text_from_excel(tmp_path):
    # Excel's "Unicode Text" export: UTF-16 with a BOM, tab-separated
    p = write(tmp_path, "email\tname\r\nana@example.org\tAna Ibáñez\r\n".encode("utf-16"))
    report = read_csv(p)
    assert [(r.email, r.name, r.line) for r in report.recipients] == [
        ("ana@example.org", "Ana Ibáñez", 2)
    ]
    assert not report.warnings


# --- delimiters, headers, blank lines, quoting ------------------------------------------------


@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_each_delimiter(tmp_path, sep):
    text = sep.join(["email", "name", "language", "city"]) + "\n"
    text += sep.join(["a@example.org", '"Roa, Carlos"', "en", "Chicago"]) + "\n"
    report = read_csv(write(tmp_path, text))
    r = report.recipients[0]
    assert (r.email, r.name, r.language, r.fields) == (
        "a@example.org",
        "Roa, Carlos",
        "en",
        {"city": "Chicago"},
    )


def test_excel_sep_hint_line(tmp_path):
    report = read_csv(write(tmp_path, "sep=;\nemail;name\na@example.org;A, B\n"))
    assert report.recipients[0].name == "A, B"
    assert report.recipients[0].line == 3


def test_header_any_case_stray_spaces_and_merge_field_names(tmp_path):
    text = "  E-Mail , First Name ,LAST_NAME, Idioma ,  Home City  \nA@Example.org,Ana,Pérez,EN,Tucson\n"
    r = read_csv(write(tmp_path, text)).recipients[0]
    assert r.email == "A@Example.org" and r.key == "a@example.org"
    assert r.name == "Ana Pérez"
    assert r.language == "en"
    assert r.fields == {"first_name": "Ana", "last_name": "Pérez", "home_city": "Tucson"}


def test_spanish_headers(tmp_path):
    text = "Correo electrónico,Nombre,Apellidos,Idioma\nana@example.org,Ana,Ibáñez Ruiz,inglés\n"
    r = read_csv(write(tmp_path, text)).recipients[0]
    assert (r.email, r.name, r.language) == ("ana@example.org", "Ana Ibáñez Ruiz", "en")


def test_blank_lines_are_skipped_and_line_numbers_stay_physical(tmp_path):
    text = "\n\nemail,name\n\na@example.org,A\n,\n  \nb@example.org,B\n\n"
    report = read_csv(write(tmp_path, text))
    assert [(r.email, r.line) for r in report.recipients] == [
        ("a@example.org", 5),
        ("b@example.org", 8),
    ]
    assert not report.problems


def test_quoted_newlines_keep_line_numbers_of_later_rows(tmp_path):
    text = (
        "email,name,address\n"  # 1
        'a@example.org,"Ana\nMaría","79 E. Washington,\nChicago\nIL"\n'  # 2-5 (one record)
        "not-an-address,B,\n"  # 6
        'c@example.org,"C, ""the"" third",x\r\n'  # 7
    )
    report = read_csv(write(tmp_path, text))
    assert [(r.email, r.line) for r in report.recipients] == [
        ("a@example.org", 2),
        ("c@example.org", 7),
    ]
    assert report.recipients[0].name == "Ana María"
    assert report.recipients[0].fields["address"] == "79 E. Washington, Chicago IL"
    assert report.recipients[1].name == 'C, "the" third'
    assert [(p.line, p.email) for p in report.problems] == [(6, "not-an-address")]


def test_quoted_values_after_a_space_following_the_delimiter(tmp_path):
    # Hand-typed lists write ", " between values; the quotes still protect the comma inside.
    text = 'email, name, language\nana@example.org, "Pérez, Ana", es\nbob@example.com, Bob, en\n'
    report = read_csv(write(tmp_path, text))
    assert [(r.email, r.name, r.language) for r in report.recipients] == [
        ("ana@example.org", "Pérez, Ana", "es"),
        ("bob@example.com", "Bob", "en"),
    ]
    assert not report.problems


def test_unclosed_quote_stops_with_the_line_where_it_opened(tmp_path):
    p = write(tmp_path, 'email,name\na@example.org,A\nb@example.org,"B\nc@example.org,C\n')
    with pytest.raises(NewsletterError, match=r"list\.csv:3: a quoted value opened here"):
        read_csv(p)


def test_unclosed_quote_in_a_long_file_names_its_line(tmp_path):
    rows = "".join(f"m{i}@example.org,M\n" for i in range(20000))
    p = write(tmp_path, 'email,name\na@example.org,"A\n' + rows)
    with pytest.raises(NewsletterError, match=r"list\.csv:2: a value here runs past \d+ char"):
        read_csv(p)


def test_more_values_than_columns_is_a_bad_row(tmp_path):
    # an unquoted comma in a name shifts the language column: skip it rather than guess
    text = "email,name,language\na@example.org,Roa, Carlos,en\nb@example.org,B,es,\n"
    report = read_csv(write(tmp_path, text))
    assert emails(report) == ["b@example.org"]  # a trailing empty value is harmless
    (problem,) = report.problems
    assert problem.line == 2 and "4 values but the header has 3 columns" in problem.reason


def test_missing_trailing_values_are_empty(tmp_path):
    report = read_csv(write(tmp_path, "email,name,language,city\na@example.org\n"), "en")
    r = report.recipients[0]
    assert (r.name, r.language, r.fields) == ("", "en", {"city": ""})


# --- bad rows, duplicates, languages ----------------------------------------------------------


def test_bad_rows_reported_with_line_and_reason_and_skipped(tmp_path):
    text = (
        "email,name,language\n"
        "ok@example.org,Ok,es\n"  # 2
        ",Nobody,es\n"  # 3
        "bad@,Bad,es\n"  # 4
        "two@@example.org,Two,en\n"  # 5
        "fr@example.org,Fr,fr\n"  # 6
        "jose@bücher.example,José,es\n"  # 7 internationalised domain: fine, sent as punycode
        "josé@example.org,José,es\n"  # 8 non-ASCII local part would need SMTPUTF8
    )
    report = read_csv(write(tmp_path, text))
    assert emails(report) == ["ok@example.org", "fr@example.org", "jose@xn--bcher-kva.example"]
    reasons = {p.line: p.reason for p in report.problems}
    assert set(reasons) == {3, 4, 5, 8}
    assert reasons[3] == "empty email"
    assert reasons[4].startswith("invalid address 'bad@'")
    assert "josé@example.org" in reasons[8]


def test_a_language_without_an_edition_falls_back_to_the_default_with_a_warning(tmp_path):
    """A row with language `fr` was dropped: that member got nothing. Now: the default edition."""
    report = read_csv(write(tmp_path, "email,name,language\nzoe@example.org,Zoë,fr\n"), "en")
    [zoe] = report.recipients
    assert zoe.language == "en" and not report.problems
    assert any(
        ":2: language 'fr' has no edition; zoe@example.org gets the default (en)" in w
        for w in report.warnings
    ), report.warnings


def test_duplicates_case_insensitive_kept_once_and_reported(tmp_path):
    text = "email,name\nAna@Example.org,First\nana@example.ORG ,Second\nb@example.org,B\n ANA@EXAMPLE.ORG,Third\n"
    report = read_csv(write(tmp_path, text))
    assert emails(report) == ["Ana@Example.org", "b@example.org"]
    assert report.recipients[0].name == "First"
    assert [(d.line, d.reason) for d in report.duplicates] == [
        (3, "duplicate of line 2; sent once"),
        (5, "duplicate of line 2; sent once"),
    ]


@pytest.mark.parametrize(
    ("written", "lang"),
    [
        ("es", "es"),
        ("EN", "en"),
        ("Español", "es"),
        ("espanol", "es"),
        ("Spanish", "es"),
        ("castellano", "es"),
        ("English", "en"),
        ("Inglés", "en"),
        ("es-MX", "es"),
        ("en_US", "en"),
        ("  ", "es"),
        ("", "es"),
        ("fr", None),
        ("esperanto", None),
    ],
)
def test_language_values(written, lang):
    assert parse_language(written, "es") == lang


def test_default_language_applies_to_empty_cells(tmp_path):
    report = read_csv(write(tmp_path, "email,language\na@example.org,\nb@example.org,es\n"), "en")
    assert [r.language for r in report.recipients] == ["en", "es"]


# --- header problems stop before anything is sent ---------------------------------------------


def test_missing_email_column_is_one_clear_error_naming_columns(tmp_path):
    p = write(tmp_path, "name;address\nAna;x\n")
    with pytest.raises(NewsletterError) as err:
        read_csv(p)
    msg = err.value.message
    assert "\n" not in msg
    assert f"{p}:1: no 'email' column" in msg and "'name', 'address'" in msg


def test_headerless_file_is_recognised_as_data(tmp_path):
    with pytest.raises(NewsletterError, match="looks like data: add a header row"):
        read_csv(write(tmp_path, "ana@example.org,Ana\n"))


def test_two_columns_meaning_email_is_an_error(tmp_path):
    with pytest.raises(NewsletterError, match=r"columns 1 \('Email'\) and 3 \('e-mail'\)"):
        read_csv(write(tmp_path, "Email,name,e-mail\n"))


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"\xef\xbb\xbf"])
def test_empty_file(tmp_path, content):
    with pytest.raises(NewsletterError, match="no header row"):
        read_csv(write(tmp_path, content))


def test_missing_file(tmp_path):
    with pytest.raises(NewsletterError, match="no such file"):
        read_csv(tmp_path / "nope.csv")


# --- injection ----------------------------------------------------------------------------------


def test_cr_lf_and_control_characters_in_names_and_fields_are_neutralised(tmp_path):
    text = (
        'email,name,city\n"a@example.org","Ana\r\nBcc: victim@example.com","X\rY\x00Z\u2028W\tV"\n'
    )
    r = read_csv(write(tmp_path, text)).recipients[0]
    assert r.name == "Ana Bcc: victim@example.com"
    assert r.fields["city"] == "X Y Z W V"
    for value in (r.name, *r.fields.values()):
        assert not any(ord(c) < 32 or c in "\u2028\u2029\x7f" for c in value)


def test_an_address_with_a_newline_is_refused():
    with pytest.raises(ValueError):
        check_address("a@example.org\nBcc: b@example.org")


def test_an_invalid_address_reads_as_one_sentence_after_any_prefix(project):
    with pytest.raises(ValueError, match=r"^invalid address 'bad@': .*[^.]$"):
        check_address("bad@")
    result = CliRunner().invoke(cli, ["suppress", "bad@"])
    assert result.exit_code == 1 and ".." not in result.output
    Path("u.csv").write_text("email\nnope\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["suppress", "--csv", "u.csv"])
    assert "u.csv:2: invalid address 'nope': " in result.output and ".;" not in result.output


def test_clean_text():
    assert clean_text("  a\r\n\r\n  b\x1b[31m ") == "a b [31m"
    assert clean_text("") == ""


# --- the command --------------------------------------------------------------------------------


def test_cli_recipients_check_sample_exits_0(project):
    result = CliRunner().invoke(cli, ["recipients", "check", "recipients/sample.csv"])
    assert result.exit_code == 0, result.output
    assert "20 recipients (12 es, 8 en), 0 bad rows skipped, 0 duplicates" in result.output


def test_cli_recipients_check_lists_problems_and_exits_1(project):
    Path("members.csv").write_bytes(
        "email;nombre;idioma\nok@example.org;Ok;es\nbad@;B;en\nOK@example.org;dup;en\n".encode(
            "cp1252"
        )
    )
    result = CliRunner().invoke(cli, ["recipients", "check", "members.csv"])
    assert result.exit_code == 1
    out = result.output
    assert "members.csv: 1 recipient (1 es, 0 en), 1 bad row skipped, 1 duplicate" in out
    assert "members.csv:3: invalid address 'bad@'" in out
    assert "members.csv:4: duplicate of line 2; sent once" in out
    assert "Error: 1 bad row in members.csv" in out
    assert "Traceback" not in out


def test_cli_recipients_check_counts_unsubscribed_and_language_choices(project):
    from newsletter.journal import Journal

    runner = CliRunner()
    result = runner.invoke(cli, ["recipients", "check", "recipients/sample.csv"])
    assert "unsubscribed" not in result.output
    assert not Path("newsletter.db").exists()  # checking creates no state
    first, second = read_csv("recipients/sample.csv").recipients[:2]
    with Journal("newsletter.db") as j:
        Suppressions(j).add(first.email.upper(), "test")
        contacts = Contacts(j)
        contacts.set_language(contacts.add(second.email), "en" if second.language == "es" else "es")
    result = runner.invoke(cli, ["recipients", "check", "recipients/sample.csv"])
    assert result.exit_code == 0, result.output
    assert "1 unsubscribed (send skips them), 1 chose the other language" in result.output


def test_cli_recipients_check_missing_email_column(project):
    Path("x.csv").write_text("name\nAna\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["recipients", "check", "x.csv"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "no 'email' column" in result.output


def test_clean_text_removes_every_invisible_format_character():
    # Every code point of Unicode category Cf in this Python's database (bidi overrides and
    # isolates, zero-width ones, soft hyphen, BOM, tags…); the list in recipients is hard-coded.
    every_cf = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf"]
    assert "\u202e" in every_cf and len(every_cf) > 150
    assert clean_text("Ana" + "".join(every_cf) + " Pérez") == "Ana Pérez"
    assert clean_text("\u202dJosé\u202c \u2067Ñúñez\u2069") == "José Ñúñez"
    assert clean_text("عليّ") == "عليّ"  # right-to-left letters themselves stay


def test_clean_texts_quick_path_agrees_with_its_rules_on_a_generated_corpus():
    """clean_text skips the regular expressions for a printable string; over strings drawn from
    spaces, letters, accents, every control, format and separator character, and characters of
    other scripts, the answer is the rules' own (_clean_slow), and both paths are taken."""
    import random

    from newsletter import recipients

    special = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c))[0] in "CZ"]
    special = [c for c in special if unicodedata.category(c) != "Cs"]  # no lone surrogates
    pool = list(" aZ09-.'@") + list("áéíóúñÑüçÀ") + ["عل", "中文", "😀"] + [" ", "  ", "\t"]
    rng = random.Random(12)
    corpus = []
    for _ in range(20_000):
        n = rng.randint(0, 8)
        chars = [rng.choice(pool) if rng.random() < 0.8 else rng.choice(special) for _ in range(n)]
        corpus.append("".join(chars))
    assert [clean_text(v) for v in corpus] == [recipients._clean_slow(v) for v in corpus]
    quick = sum(v.isprintable() for v in corpus)
    assert 5_000 < quick < 15_000  # both paths well represented


def test_a_forwarders_name_loses_its_invisible_characters_too():
    from newsletter.web import check_forward

    fwd, errors = check_forward(["f@example.org"], "Ana\u202e\u200b", "", "es", ["es"])
    assert not errors and fwd.name == "Ana"

# --- the fast path of check_address agrees with email-validator ----------------------------------


def _corpus(n: int, seed: int = 12) -> list[str]:
    """Addresses near the edge of valid: real-looking ones, then mutated a character at a time
    (specials, dots, hyphens, quotes, spaces, non-ASCII, long labels, special-use and numeric
    TLDs, IDNA-looking labels, upper case), so both answers and every rule get exercised."""
    import random

    rng = random.Random(seed)
    atext = "abcxyzABCXYZ0189!#$%&'*+/=?^_`{|}~-"
    odd = ' .."@<>()[]\\,;:\t\u00e9\u00f1\u0301\u200b\uff0e\u3002\uff20ÄÖ'
    tlds = ["org", "com", "ORG", "io", "net", "Org", "info", "mx"] * 4 + [
        "x", "c0m", "123", "test", "local", "localhost", "arpa", "invalid", "onion", "example",
        "xn--p1ai", "museum", "a-b", "de-"]

    def label(max_len: int = 12) -> str:
        kind = rng.random()
        if kind < 0.02:
            return "x" * rng.choice([62, 63, 64, 65])
        if kind < 0.05:
            return rng.choice(["xn--bcher-kva", "ab--cd", "xn--", "a--b", "-ab", "ab-", "a-b"])
        return "".join(rng.choice("abcdefghijkXYZ0123456789-") for _ in range(rng.randint(1, max_len)))

    def local() -> str:
        parts = ["".join(rng.choice(atext) for _ in range(rng.randint(1, 8)))
                 for _ in range(rng.randint(1, 3))]
        return ".".join(parts)

    out = []
    for _ in range(n):
        labels = [label() for _ in range(rng.randint(0, 3))] + [rng.choice(tlds)]
        s = f"{local()}@{'.'.join(labels)}"
        if rng.random() < 0.03:
            s = "a" * rng.randint(60, 250) + s  # address length limits
        for _ in range(rng.choice([0, 0, 0, 0, 1, 2])):  # mutate a character, or not
            i = rng.randrange(len(s) + 1)
            c = rng.choice(odd + atext + "@.-")
            s = s[:i] + c + s[i + rng.choice([0, 1]) :]
        out.append(s)
    return out


def _outcome(fn, address: str) -> tuple:
    try:
        return ("ok", fn(address))
    except ValueError as err:
        return ("refused", str(err))


def test_the_fast_path_agrees_with_email_validator_on_a_generated_corpus():
    from newsletter import recipients

    corpus = _corpus(30_000)
    fast = sum(recipients._surely_valid(a.strip()) for a in corpus if a.strip())
    disagree = [
        a
        for a in corpus
        if a.strip()
        and _outcome(check_address, a) != _outcome(recipients._check_address_slow, a.strip())
    ]
    assert disagree == []
    refused = sum(_outcome(check_address, a)[0] == "refused" for a in corpus)
    # Both answers are well represented, and the fast path decides most valid ones.
    assert refused > 5_000 and fast > 10_000
    assert fast > 0.8 * (len(corpus) - refused)


@pytest.mark.parametrize(
    "address",
    [
        "a@b.test",  # special-use names: email-validator refuses them
        "a@mail.localhost",
        "a@ab--cd.org",  # R-LDH label
        "a@xn--bcher-kva.example",  # punycode: email-validator decodes and checks it
        "a@b.c0m1",  # a TLD ends with a letter
        "a@" + "b" * 64 + ".org",  # a label over 63
        "a" * 250 + "@b.org",  # an address over 254
        ".a@b.org",
        "a..b@b.org",
    ],
)
def test_edge_addresses_take_the_slow_path(address):
    from newsletter import recipients

    assert not recipients._surely_valid(address)
    assert _outcome(check_address, address) == _outcome(recipients._check_address_slow, address)
