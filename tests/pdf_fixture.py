"""A small PDF writer for fixtures: pages of text lines, each in a named standard font and size.

Real PDFs are made by TeX or browsers; this one writes the same drawing operators (Tf, Td, Tj) so
the reader meets what they produce: several fonts, a fixed-pitch one among them, and pages.
"""

from __future__ import annotations

from dataclasses import dataclass

FONTS = {"F1": "Helvetica", "F2": "Helvetica-Bold", "F3": "Courier"}


@dataclass
class Text:
    text: str
    x: float
    y: float  # from the top of the page
    font: str = "F1"
    size: float = 11


def pdf_bytes(pages: list[list[Text]], title: str | None = None, width: int = 612, height: int = 792) -> bytes:
    def escape(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    font_ids = {name: 3 + i for i, name in enumerate(FONTS)}
    first_page = 3 + len(FONTS)
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
            b" ".join(b"%d 0 R" % (first_page + 2 * i) for i in range(len(pages))), len(pages)),
        *[b"<< /Type /Font /Subtype /Type1 /BaseFont /%s >>" % base.encode() for base in FONTS.values()],
    ]
    resources = b"<< /Font << " + b" ".join(b"/%s %d 0 R" % (n.encode(), i) for n, i in font_ids.items()) + b" >> >>"
    for number, texts in enumerate(pages):
        ops = []
        for t in texts:
            ops.append(f"BT /{t.font} {t.size} Tf {t.x} {height - t.y} Td ({escape(t.text)}) Tj ET")
        stream = "\n".join(ops).encode("latin-1")
        contents = first_page + 2 * number + 1
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Contents %d 0 R /Resources %s >>"
                       % (width, height, contents, resources))
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    info = None
    if title:
        objects.append(b"<< /Title (%s) /Producer (pdf_fixture) /CreationDate (D:20240315120000Z) >>" % escape(title).encode("latin-1"))
        info = len(objects)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    trailer = b"<< /Size %d /Root 1 0 R%s >>" % (len(objects) + 1, b" /Info %d 0 R" % info if info else b"")
    out += b"trailer\n" + trailer + b"\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def two_page_manual() -> bytes:
    """A two-page manual: a title, a section heading, a paragraph hard-wrapped with hyphenated
    line ends that runs over the page break, a code block, a running footer on both pages."""
    left, pitch = 72, 14
    page1 = [
        Text("Widget Manual", left, 72, "F2", 20),
        Text("1 Installing the widget", left, 110, "F2", 15),
        Text("The widget is installed with the command below, which down-", left, 140),
        Text("loads the package and checks its signature before it unpacks", left, 140 + pitch),
        Text("anything.", left, 140 + 2 * pitch),
        Text("$ widget install --verify", left + 18, 190, "F3", 10),
        Text("$ widget status", left + 18, 190 + 12, "F3", 10),
        Text("    state: ready", left + 18, 190 + 24, "F3", 10),
        Text("After installation the service listens on port 8123 and writes its log to the", left, 250),
        Text("journal, where every start and stop of the service is recorded for the admin-", left, 250 + pitch),
        Text("Widget Manual 1", 260, 760, "F1", 9),
    ]
    page2 = [
        Text("istrator to read later.", left, 72),
        Text("2 Removing the widget", left, 110, "F2", 15),
        Text("Removing the widget keeps its configuration unless the purge option is given.", left, 140),
        Text("Widget Manual 2", 260, 760, "F1", 9),
    ]
    return pdf_bytes([page1, page2], title="Widget Manual - Example Docs")
