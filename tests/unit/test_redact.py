"""Redaction of secrets in command lines and environments (issue 11)."""

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from memguard.incidents.redact import (PATTERNS, REDACTED, TRIGGERS, is_secret_name,
                                       redact_cmdline, redact_env)

R = REDACTED
GHP = "ghp_" + "A1b2C3d4" * 4 + "e5F6"                 # 36 after the prefix
AWS_ID = "AKIAIOSFODNN7EXAMPLE"
OPENAI = "sk-proj-4Yx8Qz1LmN0pR7sT2uV9wA3b"
HF = "hf_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH"   # 34 after the prefix
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"

REDACTED_CASES = [
    # long options, space or '='
    ("train.py --password hunter2 --epochs 40", f"train.py --password {R} --epochs 40"),
    ("x --password=hunter2", f"x --password={R}"),
    ("x --PASSWORD Hunter2", f"x --PASSWORD {R}"),
    ("x --passwd pw", f"x --passwd {R}"),
    ("x --token abc", f"x --token {R}"),
    ("x --hf-token abc", f"x --hf-token {R}"),
    ("x --use_auth_token abc", f"x --use_auth_token {R}"),
    ("x --api-key abc", f"x --api-key {R}"),
    ("x --api_key=abc", f"x --api_key={R}"),
    ("x --apikey abc", f"x --apikey {R}"),
    ("x --secret s3", f"x --secret {R}"),
    ("x --client-secret s3", f"x --client-secret {R}"),
    ("x --access-key AK", f"x --access-key {R}"),
    ("x --auth user:pw", f"x --auth {R}"),
    ("x --private-key 0xdeadbeef", f"x --private-key {R}"),
    ("x --db-password=a,b;c", f"x --db-password={R}"),
    ("x -token abc", f"x -token {R}"),                      # Go's flag package
    ("x --token 'a b' y", f"x --token '{R}' y"),
    ('x --token "a b" y', f'x --token "{R}" y'),
    ("java -Dspring.datasource.password=pw -jar app.jar",
     f"java -Dspring.datasource.password={R} -jar app.jar"),
    # key=value
    ("env password=pw", f"env password={R}"),
    ("env passwd=pw", f"env passwd={R}"),
    ("env token=t secret=s api_key=k apikey=k2 access_token=a",
     f"env token={R} secret={R} api_key={R} apikey={R} access_token={R}"),
    ("env AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG python x.py",
     f"env AWS_SECRET_ACCESS_KEY={R} python x.py"),
    ("env HF_TOKEN=abc python train.py", f"env HF_TOKEN={R} python train.py"),
    ("Server=db;Uid=sa;Pwd=x1;Database=d", f"Server=db;Uid=sa;Pwd={R};Database=d"),
    ("mount -o username=u,password=pw,uid=1000 //h/s /mnt",
     f"mount -o username=u,password={R},uid=1000 //h/s /mnt"),
    ("wget https://h/p?access_token=abc&page=2", f"wget https://h/p?access_token={R}&page=2"),
    ("x --config=password=pw", f"x --config=password={R}"),
    ('sh -c password="a b"', f'sh -c password="{R}"'),
    # URLs with credentials: the user stays
    ("git clone https://alice:pw@github.com/o/r", f"git clone https://alice:{R}@github.com/o/r"),
    ("psql postgres://u:p@ss@db:5432/x", f"psql postgres://u:{R}@db:5432/x"),
    ("redis-cli -u redis://:pw@h:6379", f"redis-cli -u redis://:{R}@h:6379"),
    # Authorization and Bearer
    ("curl -H Authorization: Bearer abcdefgh12 u", f"curl -H Authorization: Bearer {R} u"),
    ("curl -H 'Authorization: Basic dXNlcjpwdw==' u", f"curl -H 'Authorization: Basic {R}' u"),
    ("curl -H 'Authorization: token abc' u", f"curl -H 'Authorization: token {R}' u"),
    ("x --header=bearer abcdefgh12", f"x --header=bearer {R}"),
    # token shapes anywhere
    (f"git push https://{GHP}@github.com/o/r", f"git push https://{R}@github.com/o/r"),
    (f"x {GHP}", f"x {R}"),
    ("x github_pat_11ABCDEFG0123456789_abcdefghijklmnop", f"x {R}"),
    (f"x {AWS_ID} y", f"x {R} y"),
    ("x xoxb-1234567890-abcdefghij", f"x {R}"),
    (f"x {OPENAI}", f"x {R}"),
    (f"x {HF}", f"x {R}"),
    (f"x {JWT}", f"x {R}"),
]

KEPT = [
    "python train.py --tokenizer bert --epochs 40 --lr 3e-4",
    "x --password-file /etc/x --token-file=/run/t --secret-dir /s --api-key-path p",
    "x password_file=/etc/x TOKEN_PATH=/t",
    "x --password-fd 3",
    "x --no-auth --port 8080",
    "x --password --epochs 40",       # a flag followed by another option
    "x --token-type bearer --max-tokens 512 max_new_tokens=20",
    "x TOKENIZERS_PARALLELISM=false",
    "env PWD=/home/u make -j8",
    "x --pwd /home/u",
    "x --oauth-scope read",
    "x --password=",
    "x --password= --epochs 40",
    'x password=""',
    "pip install scikit-learn sk-learn-preprocessing-pipeline",
    "x sk-short1",
    "x hf_hub_download hf_transfer",
    "x ghp_short",
    "ls /home/akiaka",
    "ssh -p 2222 alice@host",          # a user, no password
    "x https://host:8080/path",
    "cc1plus -quiet -D_FORTIFY_SOURCE=2 -I/usr/include foo.cc -o foo.o",
    "the bearer of news",
    "",
]


@pytest.mark.parametrize("text, expected", REDACTED_CASES)
def test_secrets_are_redacted_and_the_rest_kept(text, expected):
    assert redact_cmdline(text) == expected


@pytest.mark.parametrize("text", KEPT)
def test_near_misses_are_kept(text):
    assert redact_cmdline(text) == text


@pytest.mark.parametrize("name, secret", [
    ("PASSWORD", True), ("MYSQL_ROOT_PASSWORD", True), ("PGPASSWORD", True), ("passwd", True),
    ("GITHUB_TOKEN", True), ("HF_TOKEN", True), ("NPMTOKEN", True), ("token", True),
    ("AWS_SECRET_ACCESS_KEY", True), ("CLIENT_SECRET", True), ("SECRET_KEY_BASE", True),
    ("OPENAI_API_KEY", True), ("WANDB_APIKEY", True), ("AWS_ACCESS_KEY", True),
    ("SSH_PRIVATE_KEY", True), ("GOOGLE_APPLICATION_CREDENTIALS", True), ("AUTH", True),
    ("BASIC_AUTH", True), ("MYSQL_PWD", True), ("my-app.password", True),
    ("TOKENIZERS_PARALLELISM", False), ("MAX_TOKENS", False), ("PATH", False),
    ("HOME", False), ("OLDPWD", False), ("SSH_AUTH_SOCK", False),
    ("XAUTHORITY", False), ("AWS_SHARED_CREDENTIALS_FILE", False),
    ("MYSQL_ROOT_PASSWORD_FILE", False), ("HF_TOKEN_PATH", False), ("TOKEN_TYPE", False),
    ("CUDA_VISIBLE_DEVICES", False), ("OAUTH_SCOPE", False),
])
def test_secret_names(name, secret):
    assert is_secret_name(name, "v") is secret


def test_pwd_is_the_working_directory_unless_its_value_is_not_a_path():
    assert not is_secret_name("PWD", "/home/u")      # the shell's working directory
    assert is_secret_name("Pwd", "s3cret")            # ODBC: Server=h;Uid=u;Pwd=s3cret


def test_environment_values_are_redacted_by_name_and_by_content():
    env = {"HF_TOKEN": "hf_x", "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin",
           "PWD": "/home/u", "EMPTY_PASSWORD": "",
           "DATABASE_URL": "postgres://u:pw@db/x", "NOTE": f"key {GHP}"}
    assert redact_env(env) == {
        "HF_TOKEN": R, "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin",
        "PWD": "/home/u", "EMPTY_PASSWORD": "",
        "DATABASE_URL": f"postgres://u:{R}@db/x", "NOTE": f"key {R}"}
    assert env["HF_TOKEN"] == "hf_x"  # a copy, the caller's dict is untouched


# Each of PATTERNS by name: a text from the module docstring's rules and
# what the pattern finds in it first, and a near miss it must find nothing in.
PATTERN_CASES = [
    ("secret name: contains", "MYSQL_ROOT_PASSWORD", "PASSWORD"),
    ("secret name: contains", "TOKENIZERS_PARALLELISM", None),
    ("secret name: ends with", "HF_TOKEN", "TOKEN"),
    ("secret name: ends with", "MAX_TOKENS", None),
    ("not a secret name", "SSH_AUTH_SOCK", "_SOCK"),
    ("not a secret name", "GITHUB_TOKEN", None),
    ("option or key", "--api-key=abc", "--api-key="),
    ("option or key", "--api-key", None),
    ("option value", '"two words" next', '"two words"'),
    ("option value", "  ", None),
    ("key=value value", "x&n=1", "x"),
    ("key=value value", ";,&", None),
    ("URL credentials", "https://user:pw@host", "https://user:pw"),
    ("URL credentials", "https://host:8080/x", None),
    ("Authorization header", "Authorization: Basic dXNlcg==", "Authorization: Basic dXNlcg=="),
    ("Authorization header", "authorized: yes", None),
    ("Bearer token", "Bearer eyJhbGciOi", "Bearer eyJhbGciOi"),
    ("Bearer token", "Bearer x", None),
    ("token shapes", f"key {GHP} end", GHP),
    ("token shapes", "ghp_short", None),
]


def test_the_patterns_are_an_immutable_documented_tuple():
    assert isinstance(PATTERNS, tuple) and all(isinstance(entry, tuple) for entry in PATTERNS)
    assert [name for name, _ in PATTERNS] == list(dict.fromkeys(name for name, *_ in PATTERN_CASES))
    patterns = dict(PATTERNS)
    for name, text, found in PATTERN_CASES:
        m = patterns[name].search(text)
        assert (m.group(0) if m else None) == found, (name, text)
    # The gate before every rule: lower case (it is compared with text.lower()).
    assert TRIGGERS == ("password", "passwd", "passphrase", "secret", "private", "credential",
                        "token", "api", "access", "auth", "pwd", "bearer", "@", "ghp_", "gho_",
                        "ghu_", "ghs_", "ghr_", "github_pat_", "akia", "asia", "xox", "sk-",
                        "hf_", "eyj")


# -- properties ---------------------------------------------------------------------

# Pieces that make secrets and near misses when glued together at random.
_PIECES = st.sampled_from([
    " ", "  ", "\t", "=", "-", "--", "_", ".", ",", ";", "&", "?", ":", "/", "@", "'", '"',
    "://", "<", ">", R, "password", "PASSWORD", "passwd", "pwd", "Pwd", "token", "TOKEN", "izer",
    "tokens", "secret", "api", "key", "api_key", "api-key", "access", "auth", "no", "file",
    "private", "credential", "Bearer", "Authorization", "Basic", "https", "user", "host",
    "x", "ab", "12345678", "abcdefghij0123456789", "/etc/x", GHP, "ghp_", AWS_ID, "AKIA",
    OPENAI, "sk-", HF, "hf_", "xoxb-", JWT, "eyJ", "github_pat_",
])
_SOUPS = st.lists(_PIECES, max_size=25).map("".join)


@settings(max_examples=600, deadline=None)
@given(st.one_of(_SOUPS, st.text(max_size=80)))
def test_redaction_is_idempotent(text):
    once = redact_cmdline(text)
    assert redact_cmdline(once) == once
    env = {"A_TOKEN": text, "NOTE": text}
    assert redact_env(redact_env(env)) == redact_env(env)


@settings(max_examples=600, deadline=None)
@given(st.one_of(_SOUPS, st.text(max_size=80)))
def test_a_text_without_trigger_words_is_never_changed(text):
    assume(not any(t in text.lower() for t in TRIGGERS))
    assert redact_cmdline(text) == text


@settings(max_examples=300, deadline=None)
@given(_SOUPS)
def test_only_secrets_change_what_stays_is_byte_identical(text):
    # Everything outside the <redacted> marks is the original text, in order.
    out = redact_cmdline(text)
    kept = [part for part in out.split(R) if part]
    pos = 0
    for part in kept:
        found = text.find(part, pos)
        assert found >= 0, (text, out, part)
        pos = found + len(part)
