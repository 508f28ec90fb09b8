"""Man pages and shell completion, generated from the argument parsers so
they never fall behind the commands:

    python -m memguard.cli.docgen OUTDIR

writes OUTDIR/man/man8/memguardd.8, OUTDIR/man/man1/memguardctl.1,
OUTDIR/bash-completion/completions/{memguardd,memguardctl} and
OUTDIR/zsh/site-functions/{_memguardd,_memguardctl}: the layout under
share/ that man, bash-completion and zsh search (``make install`` writes
them under PREFIX/share).  argparse-manpage writes the roff, shtab the
completion scripts (the ``man`` extra)."""

from __future__ import annotations

import os
import sys

from .. import __version__

PROGRAMS = {  # program -> (its parser, man section, one line for NAME)
    "memguardd": ("memguard.daemon", "8", "predicts, prevents and explains out-of-memory kills"),
    "memguardctl": ("memguard.cli.main", "1", "ask memguardd what it sees"),
}


def write(outdir: str) -> list[str]:
    """Every file, written; their paths."""
    import importlib

    import shtab
    from argparse_manpage.manpage import Manpage
    written = []
    for program, (module, section, summary) in PROGRAMS.items():
        parser = importlib.import_module(module).parser()
        files = {
            f"man/man{section}/{program}.{section}": str(Manpage(parser, _data={
                "manual_section": section, "project_name": "memguard", "version": __version__, "description": summary,
                "manual_title": "memguard"})),
            f"bash-completion/completions/{program}": shtab.complete(parser, "bash"),
            f"zsh/site-functions/_{program}": shtab.complete(parser, "zsh"),
        }
        for relative, text in files.items():
            path = os.path.join(outdir, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m memguard.cli.docgen OUTDIR", file=sys.stderr)
        sys.exit(2)
    for path in write(sys.argv[1]):
        print(path)
