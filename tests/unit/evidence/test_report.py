"""The HTML report: untrusted text escaped, every section present, a self-contained file, the
restore-time chart, and an empty period that still renders."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import replace
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest

from affidavit.evidence.content import EvidenceContent
from affidavit.evidence.report import render_report

Maker = Callable[..., EvidenceContent]
SECTIONS = (
    "verify",
    "summary",
    "controls",
    "backups",
    "verifications",
    "drills",
    "findings",
    "exceptions",
    "keys",
    "policy",
    "ledger",
)


class _Page(HTMLParser):
    """Tags, attributes and text of a page, as a browser's tokenizer sees them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def test_hostile_strings_are_shown_as_text_never_as_markup(
    content: EvidenceContent, hostile: str
) -> None:
    html = render_report(content)
    page = _Page(html)
    assert not page.named("script")
    assert not page.named("img")
    assert not page.named("b")
    assert not page.named("i")
    text = "".join(page.text)
    assert hostile in text  # shown verbatim, as text
    assert "backup job added </td></tr><script>x()</script>" in text  # a trail note
    assert "bk-4 <img src=x onerror=alert(1)>" in text  # a backup id
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "{{ 7*7 }}" in text and "49" not in text  # values are not templates


def test_hostile_values_cannot_leave_an_attribute(content: EvidenceContent) -> None:
    hostile_status = 'x"onmouseover="alert(1)'
    results = [{**content.results[0], "status": hostile_status}]
    page = _Page(render_report(replace(content, results=results)))
    assert all("onmouseover" not in attrs for _, attrs in page.tags)


def test_every_section_is_present(content: EvidenceContent) -> None:
    page = _Page(render_report(content))
    ids = {attrs.get("id") for _, attrs in page.tags}
    assert set(SECTIONS) <= ids


def test_the_header_says_how_to_verify(content: EvidenceContent) -> None:
    html = render_report(content)
    assert "affidavit evidence verify FILE --public-key VKEY" in html
    text = "".join(_Page(html).text)
    for fact in (
        content.origin,
        content.checkpoint_root,
        "2026-03-01 00:00:00 UTC",  # period start
        "2026-04-01 06:30:00 UTC",  # generated at
    ):
        assert fact in text


def test_the_file_is_self_contained(content: EvidenceContent) -> None:
    html = render_report(content)
    page = _Page(html)
    for tag in ("script", "link", "img", "iframe", "object", "embed", "base", "form"):
        assert not page.named(tag), tag
    for _, attrs in page.tags:
        assert "src" not in attrs
        href = attrs.get("href")
        assert href is None or href.startswith("#"), href  # in-page anchors only
        assert not any(name.startswith("on") for name in attrs)
    assert "@import" not in html and "url(" not in html and "@font-face" not in html
    csp = [a for a in page.named("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in (csp[0].get("content") or "")


def test_controls_show_status_counts_subjects_owner_and_mappings(
    content: EvidenceContent, make_evidence: Maker
) -> None:
    text = " ".join(" ".join(_Page(render_report(content)).text).split())
    assert "dataset:shop/users" in text  # a per-subject result
    assert "CP-9, CP-10" in text  # backup.rpo's NIST mapping (no framework chosen)
    assert "NIST SP 800-53 Rev. 5" in text
    iso = " ".join(
        " ".join(_Page(render_report(make_evidence(framework="iso-27001"))).text).split()
    )
    assert "ISO/IEC 27001:2022 Annex A" in iso
    assert "A.8.13, A.8.24" in iso  # backup.encrypted's ISO mapping


def test_backup_success_rate_per_source(content: EvidenceContent) -> None:
    html = render_report(content)
    assert re.search(r"<td>shop</td><td class=\"num\">3</td><td class=\"num\">1</td>", html)
    assert "75.0%" in html


def test_the_chart_has_one_bar_per_drill_and_marks_each_rto(content: EvidenceContent) -> None:
    page = _Page(render_report(content))
    assert len(page.named("svg")) == 1
    bars = [a for a in page.named("rect") if "bar" in (a.get("class") or "").split()]
    assert len(bars) == len(content.drills) == 3
    assert [b["class"] for b in bars] == ["bar within", "bar over", "bar no-limit"]
    widths = [float(b["width"] or 0) for b in bars]
    assert widths[1] > widths[0] > widths[2] > 0  # proportional to the restore time
    rto_lines = [a for a in page.named("line") if a.get("class") == "limit"]
    assert len(rto_lines) == 2  # the third drill has no RTO
    assert rto_lines[0]["x1"] == rto_lines[1]["x1"]  # both 900 s


def test_a_drill_without_restore_time_still_gets_its_row(content: EvidenceContent) -> None:
    drills = [{**content.drills[0], "restore_seconds": None, "rto_seconds": None}]
    page = _Page(render_report(replace(content, drills=drills)))
    bars = [a for a in page.named("rect") if "bar" in (a.get("class") or "")]
    assert len(bars) == 1
    assert float(bars[0]["width"] or 0) == 0.0


def test_no_drills_means_no_chart(content: EvidenceContent) -> None:
    html = render_report(replace(content, drills=[]))
    assert "<svg" not in html
    assert "No restore drills in this period." in html


def test_findings_show_their_remediation_trail(content: EvidenceContent) -> None:
    text = " ".join(" ".join(_Page(render_report(content)).text).split())
    assert "2026-03-06 09:00:00 UTC — alice: acknowledged" in text
    assert "(ledger 22)" in text


def test_policy_versions_show_who_proposed_and_who_approved(content: EvidenceContent) -> None:
    html = render_report(content)
    section = html[html.index('id="policy"') : html.index('id="ledger"')]
    assert "alice" in section and "bob" in section
    assert "approved by its proposer" not in section
    same = [{**content.policy_versions[0], "approved_by": "alice"}]
    html = render_report(replace(content, policy_versions=same))
    assert "approved by its proposer" in html


def test_an_empty_period_renders(empty_content: EvidenceContent) -> None:
    html = render_report(empty_content)
    page = _Page(html)
    assert set(SECTIONS) <= {attrs.get("id") for _, attrs in page.tags}
    for message in (
        "No controls were assessed in this period.",
        "No backups in this period.",
        "No verifications in this period.",
        "No restore drills in this period.",
        "No findings in this period.",
        "No exceptions in this period.",
        "No key rotations in this period.",
        "No policy checks in this period.",
    ):
        assert message in html
    assert "<svg" not in html


def test_rendering_is_deterministic(make_evidence: Maker) -> None:
    assert render_report(make_evidence()) == render_report(make_evidence())


def test_the_template_ships_as_package_data() -> None:
    template = resources.files("affidavit.evidence") / "templates" / "report.html.j2"
    assert template.is_file()


def test_only_the_report_module_imports_jinja2() -> None:
    package = Path(str(resources.files("affidavit.evidence")))
    importers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n.split(".")[0] in ("jinja2", "markupsafe") for n in names):
                importers.add(path.name)
    assert importers == {"report.py"}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -5.0, "12", True])
def test_odd_drill_numbers_do_not_break_the_chart(content: EvidenceContent, bad: object) -> None:
    drills = [{**content.drills[0], "restore_seconds": bad, "rto_seconds": bad}]
    page = _Page(render_report(replace(content, drills=drills)))
    bars = [a for a in page.named("rect") if "bar" in (a.get("class") or "")]
    assert len(bars) == 1
    width = float(bars[0]["width"] or 0)
    assert 0.0 <= width <= 720
