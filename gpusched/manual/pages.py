"""gpusched's man pages: gpuschedctl(1) from the CLI's parser and docs/cli.md, gpusched-job(5) from
docs/jobfile.md, gpusched.toml(5) from docs/config.md and gpuschedd(8) from docs/gpuschedd.md.

Each page is Markdown made here (pure functions), then turned into roff by pandoc. A doc becomes a page with
a NAME line, its first paragraphs as DESCRIPTION, its `##` sections as the page's sections, and SEE ALSO.
Two things that read well on GitHub don't in `man`, so they are rewritten first: a table too wide for an
80-column terminal (the key tables: tbl would squeeze each cell into a column a word wide) becomes a list of
tagged paragraphs, as systemd.exec(5) describes its keys; and a link to another doc becomes the page that
has it, `gpusched.toml(5)`, or the file under /usr/share/doc/gpusched/.

pandoc, not go-md2man (Debian 12's 2.0.2): go-md2man folds a code block that follows a list into the
list's last item, unformatted, and gives `#` and `##` both .SH."""

from __future__ import annotations

import argparse
import re
import subprocess
from dataclasses import dataclass

from gpusched.manual import verbs as v

WIDTH = 78                 # a table wider than this (text of its widest cells) becomes tagged paragraphs
DOCS_DIR = "/usr/share/doc/gpusched"
SOURCE = "gpusched"        # the .TH footer: the package


@dataclass(frozen=True)
class Page:
    name: str              # "gpusched-job"
    section: int
    doc: str               # docs/ file it is made from
    what: str              # the NAME line's description


PAGES = (
    Page("gpuschedctl", 1, "cli.md", "submit, watch and manage gpusched jobs"),
    Page("gpusched-job", 5, "jobfile.md", "gpusched's job file, a TOML file describing one job"),
    Page("gpusched.toml", 5, "config.md", "the configuration of the gpusched service"),
    Page("gpuschedd", 8, "gpuschedd.md", "the gpusched service's daemon"),
)
BY_DOC = {p.doc: p for p in PAGES}


def ref(page: Page) -> str:
    return f"**{page.name}**({page.section})"


def file_name(page: Page) -> str:
    return f"{page.name}.{page.section}"


# --- Markdown rewrites ---------------------------------------------------------------------------------

_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def links(text: str) -> str:
    """Links to other docs name their man page (or their file under /usr/share/doc/gpusched); links within
    the page keep their text; web links stay links."""
    def one(m: re.Match) -> str:
        label, target = m.group(1), m.group(2)
        if re.match(r"[a-z]+:", target):
            return m.group(0)
        path = target.split("#", 1)[0]
        if not path:                                   # a section of this page
            return label
        doc = path.rsplit("/", 1)[-1]
        page = BY_DOC.get(doc)
        named = label.strip("`").endswith(".md")         # [config.md](config.md): the name is the link
        if page is not None:
            return ref(page) if named else label if page.name in label else f"{label} (see {ref(page)})"
        if doc.endswith(".md"):
            return f"{DOCS_DIR}/{doc}" if named else f"{label} ({DOCS_DIR}/{doc})"
        return label                                   # a source file: its name is in the label
    return _LINK.sub(one, text)


def _cells(row: str) -> list[str]:
    """A pipe-table row's cells, `\\|` kept as a pipe within a cell."""
    row = row.strip().removeprefix("|").removesuffix("|")
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)]


def _plain(cell: str) -> str:
    """A cell's text as it shows (code marks, emphasis and link targets don't take room)."""
    return re.sub(r"[`*]", "", _LINK.sub(r"\1", cell))


def tables(text: str) -> str:
    """Each pipe table too wide for WIDTH columns as tagged paragraphs: the first cell is the tag; the middle
    ones, after their column's header, are the first line of the paragraph; the last is the text."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        if (lines[i].lstrip().startswith("|") and i + 1 < len(lines)
                and re.fullmatch(r"\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*", lines[i + 1])):
            j = i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            head, rows = _cells(lines[i]), [_cells(r) for r in lines[i + 2:j]]
            widths = [max(len(_plain(r[k])) if k < len(r) else 0 for r in [head] + rows) for k in range(len(head))]
            if sum(widths) + 2 * (len(head) - 1) > WIDTH:
                out += _tagged(head, rows, widths[-1] < max(widths))
            else:
                out += lines[i:j]
            i = j
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


def _tagged(head: list[str], rows: list[list[str]], label_last: bool) -> list[str]:
    """label_last: the last column too is shown after its header (it is not the table's text column)."""
    out = []
    label_last = label_last and len(head) > 2
    labelled = head[1:] if label_last else head[1:-1]
    for r in rows:
        r = r + [""] * (len(head) - len(r))
        if not any(r):
            continue
        first = "; ".join(f"*{_plain(h)}*: {c}" for h, c in zip(labelled, r[1:]) if c)
        text = "" if label_last or len(r) < 2 else r[-1]
        body = [p for p in (first, text) if p] or [" "]
        out += [r[0] or " ", "", f":   {body[0]}"] + [f"\n    {p}" for p in body[1:]] + [""]
    return out


def sections(text: str) -> tuple[str, str]:
    """A doc split into its title (the `#` line) and the rest, its headings one level up (`##` becomes a
    page's section, in capitals as man pages have them; `###` and deeper a subsection)."""
    lines = text.split("\n")
    title = lines[0].lstrip("# ").strip() if lines and lines[0].startswith("# ") else ""
    body, fence = [], False
    for line in lines[1 if title else 0:]:
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"(#{2,})\s+(.*)", line)
        if m:
            line = f"# {m.group(2).upper()}" if len(m.group(1)) == 2 else f"## {m.group(2)}"
        body.append(line)
    return title, "\n".join(body)


def drop_empty_sections(text: str) -> str:
    """Sections with no text yet (docs/cli.md's headings waiting for their part of the CLI)."""
    parts = re.split(r"(?m)^(?=# )", text)
    return "".join(p for p in parts if not p.startswith("# ") or p.split("\n", 1)[-1].strip())


def page_markdown(page: Page, doc: str, synopsis: str = "", extra: str = "") -> str:
    """A doc as a man page's Markdown: NAME, `synopsis`, DESCRIPTION (what comes before the doc's first
    section), `extra` (gpuschedctl's OPTIONS and COMMANDS), the doc's sections, SEE ALSO."""
    title, body = sections(tables(links(doc)))
    intro, _, rest = body.partition("\n# ")
    rest = "# " + rest if rest else ""
    others = ", ".join(ref(p) for p in PAGES if p != page)
    md = (f"# NAME\n\n{page.name} - {page.what}\n\n{synopsis}"
          f"# DESCRIPTION\n\n{intro.strip()}\n\n{extra}{rest.strip()}\n\n"
          f"# SEE ALSO\n\n{others}, **systemctl**(1), **journalctl**(1); {DOCS_DIR}/README.md\n")
    return drop_empty_sections(md)


# --- gpuschedctl(1): its parser ------------------------------------------------------------------------

def _escape(text: str) -> str:
    """Help text as Markdown text: the characters Markdown would take as marks are escaped, backquotes kept
    (the helps use them for commands)."""
    return re.sub(r"([\\*_\[\]<>#|])", r"\\\1", text)


def _term(arg: v.Arg) -> str:
    if not arg.flags:
        return f"*{arg.metavar}*" + (" ..." if arg.many else "")
    value = f" *{_escape(arg.metavar)}*" if arg.metavar else ""
    return ", ".join(f"**{f}**{value}" for f in arg.flags)


# what an argument without a help of its own is, said from what it completes to (verbs.completes)
_SAID = {v.JOBS: "a job: its id, or ID[i] (or ID_i) for element i of array ID",
         v.LIVE_JOBS: "jobs: each an id, or ID[i] (or ID_i) for element i of array ID",
         v.FILE: "a file", v.DIR: "a directory", v.USER: "a user name"}
_SAID_OF = {"json": "print one JSON object (see JSON OUTPUT)",
            "config": "the configuration file (default: $GPUSCHED_CONFIG, else /etc/gpusched/gpusched.toml)",
            "file": "a job file (see gpusched-job(5))"}


def _arg_list(args: tuple[v.Arg, ...]) -> str:
    out = []
    for arg in args:
        text = _escape(arg.help) or _SAID.get(arg.completes, "")
        text = text if arg.help else _SAID_OF.get(arg.dest, text)
        if arg.choices:
            text += " One of: " + ", ".join(f"`{c}`" for c in arg.choices) + "."
        out += [_term(arg), "", f":   {text.strip() or arg.metavar or arg.dest}", ""]
    return "\n".join(out)


def ctl_synopsis() -> str:
    return "# SYNOPSIS\n\n**gpuschedctl** [*OPTIONS*] *COMMAND* [*ARGUMENTS*]\n\n"


def ctl_extra(parser: argparse.ArgumentParser) -> str:
    """gpuschedctl(1)'s OPTIONS and COMMANDS, from the parser."""
    md = ["# OPTIONS", "", "These come before the command.", "", _arg_list(v.arguments(parser)),
          "# COMMANDS", "", "`gpuschedctl COMMAND --help` says the same for one command.", ""]
    for verb in v.verbs(parser):
        md += [f"## {verb.name}", "", f"`{verb.usage}`", "", _escape(verb.help) + ".", ""]
        if verb.args:
            md.append(_arg_list(verb.args))
    return "\n".join(md) + "\n"


# --- roff ----------------------------------------------------------------------------------------------

def roff(page: Page, markdown: str, version: str) -> str:
    """The page in roff, by pandoc (commonmark with tables and definition lists)."""
    p = subprocess.run(
        # -smart: "--all" stays two hyphens, not an en dash
        ["pandoc", "--standalone", "--from", "commonmark_x-smart", "--to", "man",
         "--metadata", f"title={page.name}", "--metadata", f"section={page.section}",
         "--metadata", f"footer={SOURCE} {version}", "--metadata", "header=gpusched manual",
         "--metadata", "date="],
        input=markdown, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"pandoc failed on {file_name(page)}: {p.stderr.strip()}")
    return p.stdout
