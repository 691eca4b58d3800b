"""python3 -m gpusched.manual [--prefix /usr] [--docs DIR] [--only man|completions] DEST: write the man pages
and completions under DEST as they are installed under PREFIX (PREFIX/share/man/man1/gpuschedctl.1, ...).
scripts/build-deb: DEST debian/gpusched, PREFIX /usr; scripts/install: DEST /, PREFIX /usr/local."""

from __future__ import annotations

import argparse
import os
import sys

from gpusched.ctl.main import build_parser
from gpusched.manual import pages, shells

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def completion_paths(prefix: str) -> dict[str, str]:
    """Where bash-completion, zsh and fish look, under PREFIX (zsh: Debian's vendor directory for /usr,
    site-functions elsewhere, both on Debian's default $fpath)."""
    share = os.path.join(prefix, "share")
    zsh = "zsh/vendor-completions" if prefix == "/usr" else "zsh/site-functions"
    return {"bash": f"{share}/bash-completion/completions/gpuschedctl", "zsh": f"{share}/{zsh}/_gpuschedctl",
            "fish": f"{share}/fish/vendor_completions.d/gpuschedctl.fish"}


def man_path(prefix: str, page: pages.Page) -> str:
    return os.path.join(prefix, "share/man", f"man{page.section}", pages.file_name(page))


def _version() -> str:
    import tomllib
    try:
        with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
            return tomllib.load(f)["project"]["version"]
    except (OSError, KeyError):
        return ""


def _write(dest: str, path: str, text: str) -> None:
    target = os.path.join(dest, path.lstrip("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w", encoding="utf-8") as f:
        f.write(text)
    print(target)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m gpusched.manual", description=__doc__.split("\n")[0])
    ap.add_argument("dest")
    ap.add_argument("--prefix", default="/usr")
    ap.add_argument("--docs", default=os.path.join(ROOT, "docs"))
    ap.add_argument("--only", choices=("man", "completions"))
    args = ap.parse_args(argv)
    if args.only != "man":
        paths = completion_paths(args.prefix)
        for shell, make in (("bash", shells.bash), ("zsh", shells.zsh), ("fish", shells.fish)):
            _write(args.dest, paths[shell], make(build_parser()))      # a fresh parser each: shtab marks it
    if args.only != "completions":
        version = _version()
        for page in pages.PAGES:
            with open(os.path.join(args.docs, page.doc), encoding="utf-8") as f:
                doc = f.read()
            if page.name == "gpuschedctl":
                md = pages.page_markdown(page, doc, pages.ctl_synopsis(), pages.ctl_extra(build_parser()))
            else:
                md = pages.page_markdown(page, doc)
            _write(args.dest, man_path(args.prefix, page), pages.roff(page, md, version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
