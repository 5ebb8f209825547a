"""Validating an e-invoice as a receiving access point would: against the official UBL 2.1
schema (lxml/libxml2) and the Peppol BIS Billing 3.0 rules (the EN 16931 and Peppol Schematron,
as OpenPEPPOL publishes them compiled to XSLT 2.0, run by Saxon-HE through saxonche).

The artefacts come from Maven's registry by name (scripts/einvoice-rules, run by
scripts/bootstrap; run here too when they are missing) into .local/einvoice/."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from lxml import etree
from saxonche import PySaxonProcessor, PyXslt30Processor, PyXsltExecutable

ROOT = Path(__file__).resolve().parent.parent
ARTEFACTS = ROOT / ".local" / "einvoice"
SCHEMAS = {"Invoice": "UBL-Invoice-2.1.xsd", "CreditNote": "UBL-CreditNote-2.1.xsd"}
RULE_SETS = ("CEN-EN16931-UBL.xslt", "PEPPOL-EN16931-UBL.xslt")
SVRL = "{http://purl.oclc.org/dsdl/svrl}"


def artefacts() -> Path:
    if not (ARTEFACTS / "peppol" / RULE_SETS[1]).exists():
        subprocess.run([str(ROOT / "scripts" / "einvoice-rules")], check=True)
    return ARTEFACTS


@cache
def schema(kind: str) -> etree.XMLSchema:
    path = artefacts() / "ubl21" / "maindoc" / SCHEMAS[kind]
    return etree.XMLSchema(etree.parse(str(path)))


def schema_errors(document: bytes) -> list[str]:
    """The UBL 2.1 schema's complaints (empty: valid)."""
    root = etree.fromstring(document)
    kind = etree.QName(root).localname
    checker = schema(kind)
    if checker.validate(root):
        return []
    log: list[etree._LogEntry] = list(checker.error_log)  # type: ignore[call-overload]
    return [f"{e.line}: {e.message}" for e in log]


@dataclass(frozen=True)
class Finding:
    rule: str
    flag: str  # "fatal" or "warning"
    text: str
    location: str


@cache
def _saxon() -> tuple[PySaxonProcessor, PyXslt30Processor]:
    processor = PySaxonProcessor(license=False)
    return processor, processor.new_xslt30_processor()


@cache
def _rules(name: str) -> PyXsltExecutable:
    _, xslt = _saxon()
    return xslt.compile_stylesheet(stylesheet_file=str(artefacts() / "peppol" / name))


def rule_findings(document: bytes) -> list[Finding]:
    """Every failed assertion of the Peppol BIS 3.0 rules (EN 16931, then Peppol's own)."""
    processor, _ = _saxon()
    node = processor.parse_xml(xml_text=document.decode("utf-8"))
    found: list[Finding] = []
    for name in RULE_SETS:
        report = _rules(name).transform_to_string(xdm_node=node)
        for failed in etree.fromstring(report.encode("utf-8")).iter(f"{SVRL}failed-assert"):
            text = failed.findtext(f"{SVRL}text") or ""
            found.append(
                Finding(
                    failed.get("id", "?"),
                    failed.get("flag", "fatal"),
                    " ".join(text.split()),
                    failed.get("location", ""),
                )
            )
    return found


def fatal(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.flag != "warning"]
