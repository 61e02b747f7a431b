"""Build the development collections from Debian packages, reproducibly and offline.

    python3 eval/collections/build.py [--out eval/collections]

Each collection is a folder of real documents nobody here wrote, of a kind the seeds are not:
- debian-reference: chapters of the Debian Reference (long HTML pages: tables, lists, code);
- debian-handbook: sections of the Debian Administrator's Handbook (HTML, admonitions, code);
- r-manuals: three R manuals (LaTeX-made PDFs: running heads, hyphenation, code);
- printed-pdf: other Handbook sections printed to PDF by Chromium (browser-made PDFs);
- requests-docs: the Requests library's Sphinx-made documentation (an API reference of signatures and
  field lists, user guides with code, a FAQ and a changelog).
- sphinx-docs: Sphinx's own documentation (reStructuredText tables, directive and option references,
  a man page, a FAQ, a glossary, tutorials).
- debian-policy: the Debian Policy Manual and its companion documents as plain text (hard-wrapped
  lines, headings underlined with = - ~ *, nested lists, indented definitions and literal blocks).
- psycopg-docs: psycopg2's Sphinx-made documentation, added last and measured as it came (a module
  reference of classes, methods and exceptions with "new in version" notes, a usage guide full of
  code, a FAQ, and a table of SQLSTATE error classes).

The packages are installed with apt-get when missing; `dpkg -L` says where their files are.
Python's own documentation is kept out: it is an independent held-out check.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGES = ["debian-reference-en", "debian-handbook", "r-doc-pdf", "chromium", "python-requests-doc", "sphinx-doc",
            "debian-policy", "python-psycopg2-doc"]

REFERENCE_CHAPTERS = ["pr01", "ch01", "ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "ch08"]
HANDBOOK_SECTIONS = [
    "sect.apt-get", "sect.apt-cache", "sect.manipulating-packages-with-dpkg", "sect.package-meta-information",
    "sect.source-package-structure", "sect.config-bootloader", "sect.network-config", "sect.hostname-name-service",
    "sect.user-group-databases", "sect.creating-accounts", "sect.shell-environment", "sect.syslog",
    "sect.task-scheduling-cron-atd", "sect.backup", "sect.quotas", "sect.rights-management",
    "sect.firewall-packet-filtering", "sect.remote-login", "sect.release-lifecycle", "sect.searching-packages",
]
PRINTED_SECTIONS = [
    "sect.http-web-server", "sect.dhcp", "sect.domain-name-servers", "sect.nfs-file-server",
    "sect.windows-file-server-with-samba", "sect.ldap-directory", "sect.kernel-compilation", "sect.apparmor",
]
R_MANUALS = ["R-intro.pdf", "R-data.pdf", "R-FAQ.pdf"]
REQUESTS_PAGES = ["api", "user/quickstart", "user/advanced", "user/authentication", "user/install",
                  "community/faq", "community/recommended", "community/updates"]
SPHINX_PAGES = ["usage/restructuredtext/basics", "usage/extensions/autodoc", "man/sphinx-build", "faq", "glossary",
                "usage/quickstart", "usage/extensions/napoleon", "usage/extensions/intersphinx", "usage/theming",
                "tutorial/describing-code"]
PSYCOPG_PAGES = ["install", "usage", "module", "connection", "cursor", "advanced", "faq", "errors", "sql", "pool"]
POLICY_TEXTS = ["policy", "upgrading-checklist", "copyright-format-1.0", "debconf_specification", "perl-policy",
                "menu-policy", "autopkgtest"]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def package_files(package: str) -> list[Path]:
    out = subprocess.run(["dpkg", "-L", package], check=True, capture_output=True, text=True).stdout
    return [Path(line) for line in out.splitlines() if line.strip()]


def find(package: str, name: str, under: str = "") -> Path:
    matches = [p for p in package_files(package) if p.name == name and under in str(p) and p.is_file()]
    if not matches:
        sys.exit(f"{name} not found in package {package}; reinstall it: apt-get install --reinstall {package}")
    return sorted(matches)[0]


def find_path(package: str, ending: str) -> Path:
    """The package's one file whose path ends so (a page name alone can be in several folders)."""
    matches = [p for p in package_files(package) if str(p).endswith(ending) and p.is_file()]
    if len(matches) != 1:
        sys.exit(f"{ending} not found in package {package}; reinstall it: apt-get install --reinstall {package}")
    return matches[0]


def install_missing() -> None:
    missing = [p for p in PACKAGES if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *missing], check=True, env=env, stdout=subprocess.DEVNULL)


def copy_into(folder: Path, files: list[tuple[Path, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for source, name in files:
        shutil.copyfile(source, folder / name)


def gunzip_into(folder: Path, files: list[tuple[Path, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for source, name in files:
        (folder / name).write_bytes(gzip.decompress(source.read_bytes()))


def print_to_pdf(html: Path, pdf: Path) -> None:
    """Chromium prints the page as a reader would (the page's own stylesheet), to a temporary name first."""
    chromium = shutil.which("chromium") or sys.exit("chromium not found; apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        partial = pdf.with_suffix(".partial")
        subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--print-to-pdf={partial}", html.as_uri()],
            check=True, capture_output=True, timeout=120,
        )
        partial.replace(pdf)


def build(out: Path) -> None:
    install_missing()
    copy_into(out / "debian-reference" / "docs", [
        (find("debian-reference-en", f"{c}.en.html"), f"debian-reference-{c}.html") for c in REFERENCE_CHAPTERS
    ])
    copy_into(out / "debian-handbook" / "docs", [
        (find("debian-handbook", f"{s}.html", "/en-US/"), f"handbook-{s.removeprefix('sect.')}.html") for s in HANDBOOK_SECTIONS
    ])
    copy_into(out / "r-manuals" / "docs", [(find("r-doc-pdf", name), name) for name in R_MANUALS])
    copy_into(out / "requests-docs" / "docs", [
        (find_path("python-requests-doc", f"/html/{page}.html"), f"requests-{page.replace('/', '-')}.html")
        for page in REQUESTS_PAGES
    ])
    copy_into(out / "sphinx-docs" / "docs", [
        (find_path("sphinx-doc", f"/html/{page}.html"), f"sphinx-{page.replace('/', '-')}.html") for page in SPHINX_PAGES
    ])
    copy_into(out / "psycopg-docs" / "docs", [
        (find_path("python-psycopg2-doc", f"/html/{page}.html"), f"psycopg-{page}.html") for page in PSYCOPG_PAGES
    ])
    gunzip_into(out / "debian-policy" / "docs", [
        (find_path("debian-policy", f"/{name}.txt.gz"), f"{name}.txt") for name in POLICY_TEXTS
    ])
    printed = out / "printed-pdf" / "docs"
    printed.mkdir(parents=True, exist_ok=True)
    for section in PRINTED_SECTIONS:
        target = printed / f"printed-{section.removeprefix('sect.')}.pdf"
        if not target.exists():
            print_to_pdf(find("debian-handbook", f"{section}.html", "/en-US/"), target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    build(parser.parse_args().out)


if __name__ == "__main__":
    main()
