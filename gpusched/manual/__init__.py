"""gpusched's manual, made at build time: the man pages (gpuschedctl(1) from the CLI's parser and docs/cli.md,
gpusched-job(5), gpusched.toml(5) and gpuschedd(8) from docs/) and the bash, zsh and fish completions of
gpuschedctl (from the same parser). `python3 -m gpusched.manual` writes them; scripts/build-deb and
scripts/install run it, so they never drift from the parser or the docs. Nothing here is installed: it runs
from the source tree (pyproject.toml leaves the package out) and needs shtab and pandoc, build tools only.

verbs: the parser as plain data; shells: the completion scripts; pages: the man pages."""
