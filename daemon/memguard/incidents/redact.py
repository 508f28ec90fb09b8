"""Secrets out of command lines and environments before an incident is stored.

An incident report names the processes involved with their command lines,
and incident files outlive the processes; so before a command line or an
environment value is stored, each secret in it is replaced by ``<redacted>``
and every other byte is kept, so a person can still read the command.

What is redacted (option and variable names are matched case-insensitively,
``-`` and ``.`` count as ``_``; token shapes are case-sensitive):

=====================================  ==========================================================
rule                                   example (before -> after)
=====================================  ==========================================================
option with a secret name, 1 or 2      ``--password hunter2`` -> ``--password <redacted>``
dashes, value after ``=`` or a space   ``--api-key=abc`` -> ``--api-key=<redacted>``
                                       (``-token X`` too, as Go programs spell it)
``key=value`` with a secret name       ``db_password=x`` -> ``db_password=<redacted>``;
                                       value ends at a space, ``&``, ``;`` or ``,``
                                       (``?token=x&n=1``, ``Server=h;Pwd=x;``,
                                       ``-o user=u,password=x``)
environment variable, secret name      ``GITHUB_TOKEN`` -> whole value redacted
URL credentials                        ``https://user:pw@host`` -> ``https://user:<redacted>@host``
Authorization header, Bearer tokens    ``Authorization: Basic dXNlcg==``, ``Bearer eyJ...``
well-known token shapes, anywhere      GitHub ``ghp_ gho_ ghu_ ghs_ ghr_ github_pat_``, AWS key ids
                                       ``AKIA``/``ASIA`` + 16, Slack ``xoxa- xoxb- xoxp- ...``,
                                       ``sk-`` + 20 or more with a digit (OpenAI, Anthropic),
                                       Hugging Face ``hf_`` + 30 or more, JSON web tokens ``eyJ..``
=====================================  ==========================================================

A *secret name* (after dropping leading dashes, upper-cased):

- contains ``PASSWORD``, ``PASSWD``, ``PASSPHRASE``, ``SECRET``,
  ``PRIVATE_KEY``/``PRIVATEKEY`` or ``CREDENTIAL``; or
- ends with ``TOKEN``, ``API_KEY``/``APIKEY``, ``ACCESS_KEY``, ``SECRET_KEY``,
  ``CREDENTIALS``, or with the word ``AUTH``, ``AUTHORIZATION`` or ``PWD``;
- but not when its last word is ``FILE``, ``PATH``, ``DIR``, ``SOCK``,
  ``SOCKET`` or ``FD`` (``--password-file /etc/x``, ``AWS_SHARED_CREDENTIALS_FILE``,
  ``SSH_AUTH_SOCK``: a path to a secret is not the secret), nor when it
  starts with ``NO_`` (``--no-auth``, a flag without a value); and ``PWD``
  itself is kept when its value is an absolute path (the working directory,
  while ``Pwd=`` in an ODBC string is a password).

So ``TOKENIZERS_PARALLELISM``, ``--tokenizer bert``, ``MAX_TOKENS`` and
``--token-type`` are kept, while ``HF_TOKEN``, ``--use-auth-token`` and
``MYSQL_ROOT_PASSWORD`` are redacted.  After a secret option, a following
word that starts with ``-`` is taken for the next option, not a value.

Not redacted: short options (``-p secret``, ``-u user:pass``: too many
programs use them for ports and users), positional secrets
(``mysql ... secret``), and secrets a program reads from elsewhere.  A text
containing none of :data:`TRIGGERS` (case-insensitively) is never changed,
and redacting twice gives what redacting once gave.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"

# Case-insensitive substrings without which no rule can fire.
TRIGGERS = ("password", "passwd", "passphrase", "secret", "private", "credential", "token",
            "api", "access", "auth", "pwd", "bearer", "@", "ghp_", "gho_", "ghu_", "ghs_",
            "ghr_", "github_pat_", "akia", "asia", "xox", "sk-", "hf_", "eyj")

_SECRET_ANYWHERE = re.compile(r"PASSWORD|PASSWD|PASSPHRASE|SECRET|PRIVATE_?KEY|CREDENTIAL")
_SECRET_AT_END = re.compile(
    r"(?:TOKEN|API_?KEY|ACCESS_?KEY|SECRET_?KEY|CREDENTIALS)$|(?:^|_)(?:AUTH|AUTHORIZATION|PWD)$")
_NOT_SECRET = re.compile(r"(?:^|_)(?:FILE|PATH|DIR|SOCK|SOCKET|FD)$|^NO_")

# A name and its separator: "--name=", "-name ", "name=".  The look-behind
# makes the name start at a word edge (not inside "a.b.password").
_KEY = re.compile(r"(?<![A-Za-z0-9_.\-])(-{0,2})([A-Za-z_][A-Za-z0-9_.\-]*)(=|[ \t]+)")
# The value of an option (one argument: up to the next space) and of a bare
# key=value (up to the next separator of a query string, an ODBC string or
# mount options).  A quoted value is redacted inside its quotes.
_OPTION_VALUE = re.compile(r"\"[^\"]*\"|'[^']*'|\S+")
_KEY_VALUE = re.compile(r"\"[^\"]*\"|'[^']*'|[\"']?[^\s&;,\"']+")

_URL_CREDENTIALS = re.compile(
    r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*://[^\s/?#@:]*:)([^\s/?#]+)(?=@)")
_AUTHORIZATION = re.compile(
    r"(?i)(?<![a-z0-9_])(authorization\s*:\s*(?:(?:basic|bearer|token)\s+)?)([^\s\"']+)")
_BEARER = re.compile(r"(?i)(?<![a-z0-9_])(bearer\s+)([^\s\"'-][^\s\"']{7,})")
_TOKEN_SHAPES = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"gh[pousr]_[A-Za-z0-9]{20,}"                      # GitHub classic: ghp_ + 36
    r"|github_pat_[A-Za-z0-9_]{22,}"                   # GitHub fine-grained
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"       # AWS access key id
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"                  # Slack
    r"|sk-(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}"   # OpenAI, Anthropic (sk-ant-...)
    r"|hf_[A-Za-z0-9]{30,}"                            # Hugging Face: hf_ + 34
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"  # JSON web token
    r")")

# Every pattern used, by name (compiled patterns are immutable).
PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("secret name: contains", _SECRET_ANYWHERE),
    ("secret name: ends with", _SECRET_AT_END),
    ("not a secret name", _NOT_SECRET),
    ("option or key", _KEY),
    ("option value", _OPTION_VALUE),
    ("key=value value", _KEY_VALUE),
    ("URL credentials", _URL_CREDENTIALS),
    ("Authorization header", _AUTHORIZATION),
    ("Bearer token", _BEARER),
    ("token shapes", _TOKEN_SHAPES),
)


def is_secret_name(name: str, value: str | None = None) -> bool:
    """Whether an option, key or environment variable called *name* holds a
    secret (rules in the module docstring); *value* only matters for ``PWD``."""
    norm = re.sub(r"[-.]", "_", name.lstrip("-")).upper()
    if _NOT_SECRET.search(norm):
        return False
    if norm == "PWD" and value is not None and value.startswith("/"):
        return False
    return bool(_SECRET_ANYWHERE.search(norm) or _SECRET_AT_END.search(norm))


def redact_cmdline(text: str) -> str:
    """*text* (a command line, arguments joined by spaces, or any value)
    with each secret replaced by ``<redacted>``; unchanged when it holds none."""
    # Shapes first: replacing one can bare an option glued to it
    # ("hf_...--token x"), which the next rules then see, as a second pass would.
    text = _TOKEN_SHAPES.sub(REDACTED, text)
    text = _redact_keys(text)
    text = _URL_CREDENTIALS.sub(lambda m: m.group(1) + REDACTED, text)
    text = _AUTHORIZATION.sub(lambda m: m.group(1) + REDACTED, text)
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)


def redact_env(env: dict[str, str]) -> dict[str, str]:
    """A copy of *env*: the value of each variable with a secret name replaced
    by ``<redacted>`` (an empty one stays empty), every other value passed
    through :func:`redact_cmdline` (``DATABASE_URL=postgres://u:pw@db``)."""
    return {name: (REDACTED if value else value) if is_secret_name(name, value)
            else redact_cmdline(value) for name, value in env.items()}


def _redact_keys(text: str) -> str:
    """Redact the values of secret options and ``key=value`` pairs."""
    out, copied, pos = [], 0, 0
    while m := _KEY.search(text, pos):
        dashes, name, sep = m.groups()
        pos = m.end(2)  # a value that is not a secret's may still hold a key
        if not dashes and sep != "=":
            continue  # "password foo": a word, not an option
        value = (_OPTION_VALUE if dashes else _KEY_VALUE).match(text, m.end())
        if value is None or (sep != "=" and value.group().startswith("-")):
            continue
        raw = value.group()
        quoted = len(raw) > 1 and raw[0] in "\"'" and raw[-1] == raw[0]
        if (quoted and len(raw) == 2) or not is_secret_name(name, raw.strip("\"'")):
            continue
        quote = raw[0] if quoted else ""
        out.append(text[copied:m.end()] + quote + REDACTED + quote)
        copied = pos = value.end()
    out.append(text[copied:])
    return "".join(out)
