"""The rule condition language: parsing, null semantics, errors with columns."""

import fnmatch
import operator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memguard.rules.expr import MAX_DEPTH, MAX_TOKENS, ExprError, compile_condition, parse

MiB = 2**20
ENV = {"tto": 45.0, "usage_ratio": 0.9, "psi": {"some": {"avg10": 25.0}}, "working_set": 8 * 2**30,
       "domain": "cgroup:/a", "job": {"name": "train"}, "rate": None}


@pytest.mark.parametrize("text,expected", [
    ("tto < 60s && usage_ratio > 0.8", True),
    ("tto < 30s", False),
    ("tto < 1m", True),
    ("working_set > 7.5GiB", True),
    ("working_set >= 8GiB && working_set <= 8GiB", True),
    ("working_set > 9GB", False),
    ("psi.some.avg10 > 20 || false", True),
    ("psi.full.avg10 > 20", False),              # absent field: null, comparison false
    ("has(psi.full.avg10)", False),
    ("has(job.name) && job.name == 'train'", True),
    ('!(domain in ["host", "wsl"])', True),
    ("domain in ['cgroup:/a']", True),
    ("rate > 0", False),                          # null compared: false
    ("rate == null", True),
    ("(tto + 15) / 2 == 30", True),
    ("tto % 10 == 5", True),
    ("rate + 1 > 0", False),                      # null arithmetic: null
    ("tto < 1m ? usage_ratio > 0.5 : false", True),
    ("min(tto, 30) == 30 && max(tto, 30) == 45", True),
    ("abs(-tto) == 45", True),
    ("size(domain) == 9", True),
    ("matches(domain, 'cgroup:/*')", True),
    ("domain > 3", False),                        # type error: false
    ("250ms == 0.25 && 5m == 300 && 1h == 3600", True),
    ("true < 2 || true >= 0", False),            # a bool is not a number
    ("domain < 'd' && 'a' < domain", True),      # strings order
    ("tto / 0 == null", True),                   # division by zero: null
    ("'ab' + 'c' == 'abc' && size([1] + [2, 3]) == 3", True),
    ("domain + 1 == null", True),
    ("'name' in job && !('x' in job) && !(1 in job)", True),   # keys of a map
    ("1 in domain", False),
    ("min('b', 'a') == 'a' && min(1, 'a') == null", True),
    ("-domain == null && --tto == 45", True),
    ("true == 1 || [true] == [1] || 1 in [true] || 'a' == ['a']", False),   # no bool is a number
    ("1 == 1.0 && [1, 'a'] == [1.0, 'a'] && 45 in [1, tto] && job == job", True),
    ("rate != 0 && !(rate == 0) && rate == null", True),                    # null equals only null
    ("domain == 'café' || size('é') != 1", False),
    ("'a\\'b\\x41\\u00e9' == \"a'bA\u00e9\"", True),                          # escapes as CEL's
])
def test_conditions(text, expected):
    assert compile_condition(text)(ENV) is expected


@pytest.mark.parametrize("text,column,what", [
    ("tto <", 6, "expected a value"),
    ("tto < 60x", 7, "unknown unit in '60x'"),
    ("foo(1)", 1, "unknown function 'foo'"),
    ("tto && (", 9, "expected a value"),
    ("1 +* 2", 4, "expected a value"),
    ("tto < 60s)", 10, "unexpected ')'"),
    ("min(1)", 1, "takes 2 argument(s)"),
    ("tto @ 3", 5, "unexpected character '@'"),
    (r"domain == 'a\d'", 13, r"invalid escape '\\d'"),
    (r"domain == '\uD800'", 12, r"invalid escape '\\uD800'"),
    ("1" * 31 + " > 0", 1, "number longer than 30 digits"),
    ("\u0661s > 1", 1, "unexpected character"),               # an Arabic-Indic digit
    ("psi" + ".some" * 40 + " > 1", 4 + 5 * 32, "nested more than 32 deep"),
])
def test_errors_say_where(text, column, what):
    with pytest.raises(ExprError) as e:
        compile_condition(text)
    assert e.value.column == column and what in e.value.message


def test_too_deep_or_too_long_is_an_error_not_a_crash():
    assert compile_condition("(" * MAX_DEPTH + "tto" + ")" * MAX_DEPTH + " > 1")(ENV) is True
    with pytest.raises(ExprError, match="nested more than"):
        compile_condition("(" * (MAX_DEPTH + 1) + "tto" + ")" * (MAX_DEPTH + 1) + " > 1")
    with pytest.raises(ExprError, match="nested more than"):
        compile_condition("!" * (MAX_DEPTH + 1) + "true")
    with pytest.raises(ExprError, match=f"longer than {MAX_TOKENS} tokens"):
        compile_condition(" && ".join(["tto > 1"] * 100))
    assert compile_condition(" && ".join(["psi.some.avg10 > 1"] * (MAX_TOKENS // 8)))(ENV) is True


def test_unknown_variable_is_an_error_when_the_names_are_known():
    with pytest.raises(ExprError, match="unknown variable 'ttoo'") as e:
        compile_condition("usage_ratio > 0.5 && ttoo < 60", known={"usage_ratio", "tto"})
    assert e.value.column == 22
    with pytest.raises(ExprError) as e:                         # where it is, not where its letters first occur
        compile_condition("tto < 60s && to > 1", known=iter(["tto"]))
    assert (e.value.column, e.value.message) == (14, "unknown variable 'to' (known: tto)")
    assert compile_condition("psi.some.avg10 > 1", known={"psi"}).names == {"psi", "psi.some", "psi.some.avg10"}


TYPES = {"tto": "number", "domain": "string", "psi": "map", "psi.some.avg10": "number", "job": "map"}


@pytest.mark.parametrize("text,column,what", [
    ("tto < 'soon'", 5, "tto is a number, compared with a string ('soon')"),
    ("3 == domain", 3, "domain is a string, compared with a number (3)"),
    ("psi.some.avg10 >= true", 16, "psi.some.avg10 is a number, compared with a bool (True)"),
    ("tto > null", 5, "tto > null is always false (has(tto) tests for a value)"),
])
def test_a_comparison_its_types_make_always_false_is_an_error(text, column, what):
    with pytest.raises(ExprError) as e:
        compile_condition(text, known=TYPES)
    assert (e.value.column, e.value.message) == (column, what)


def test_typed_variables_compare_as_untyped_ones():
    for text in ("tto < 60s", "60 > tto", "domain >= 'cgroup:/'", "psi.some.avg10 > 20", "tto == null",
                 "domain == 'cgroup:/a'"):
        for env in (ENV, {}, {"psi": None}, {"psi": {"some": None}}, {"psi.some.avg10": 30.0}):
            assert compile_condition(text, known=TYPES)(env) is compile_condition(text)(env), (text, env)


def test_conditions_are_equal_when_their_text_is():
    assert compile_condition("tto < 60s") == compile_condition("tto < 60s") != compile_condition("tto < 1m")


def test_no_python_is_reachable():
    for text in ("__import__('os')", "().__class__"):
        with pytest.raises(ExprError):
            compile_condition(text)
    # a field is looked up in the variables' maps, never as a Python attribute
    assert compile_condition("tto.__class__ == null && job.__class__ == null")(ENV) is True


@settings(deadline=None, derandomize=True, max_examples=300)
@given(st.text(alphabet="tto<>=!&|()[],.?:'\"+-*/% 0123456789smhGiBKM_abcxyz", max_size=40))
def test_garbage_raises_only_expr_errors_and_evaluation_never_raises(text):
    try:
        cond = compile_condition(text)
    except ExprError:
        return
    assert cond(ENV) in (True, False)


# A second, plain reading of the language: an interpreter of the parsed tree,
# written from the module's docstring.  The compiled code must agree with it
# on every condition and every value.

def _num(x):
    return type(x) in (int, float)


def _ord(a, b):
    return (_num(a) and _num(b)) or (type(a) is str and type(b) is str)


def equal(a, b):
    if _num(a) and _num(b):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return set(a) == set(b) and all(equal(a[k], b[k]) for k in a)
    return a == b


ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "%": operator.mod}


def interpret(node, env):
    shape, *args = node
    if shape == "const":
        return args[0]
    if shape == "var":
        return env.get(args[0])
    if shape == "field":
        obj = interpret(args[0], env)
        return obj.get(args[1]) if isinstance(obj, dict) else None
    if shape == "list":
        return [interpret(n, env) for n in args[0]]
    if shape == "not":
        return interpret(args[0], env) is not True
    if shape == "neg":
        v = interpret(args[0], env)
        return -v if _num(v) else None
    if shape == "has":
        return interpret(args[0], env) is not None
    if shape == "and":
        return interpret(args[0], env) is True and interpret(args[1], env) is True
    if shape == "or":
        return interpret(args[0], env) is True or interpret(args[1], env) is True
    if shape == "if":
        return interpret(args[1] if interpret(args[0], env) is True else args[2], env)
    if shape == "in":
        a, b = interpret(args[0], env), interpret(args[1], env)
        if isinstance(b, list):
            return any(equal(a, x) for x in b)
        return isinstance(b, (str, dict)) and isinstance(a, str) and a in b
    if shape == "cmp":
        op, a, b = args[0], interpret(args[1], env), interpret(args[2], env)
        if op in ("==", "!="):
            return equal(a, b) == (op == "==")
        return _ord(a, b) and ORDER[op](a, b)
    if shape == "math":
        op, a, b = args[0], interpret(args[1], env), interpret(args[2], env)
        if _num(a) and _num(b):
            try:
                return ARITH[op](a, b)
            except (ZeroDivisionError, OverflowError):
                return None
        return a + b if op == "+" and type(a) is type(b) and type(a) in (str, list) else None
    name, vals = args[0], [interpret(n, env) for n in args[1]]
    if name in ("min", "max"):
        return (min if name == "min" else max)(*vals) if _ord(*vals) else None
    if name == "abs":
        return abs(vals[0]) if _num(vals[0]) else None
    if name == "size":
        return len(vals[0]) if type(vals[0]) in (list, str, dict) else None
    return type(vals[0]) is str and type(vals[1]) is str and fnmatch.fnmatchcase(*vals)


LEAVES = st.sampled_from(["tto", "rate", "domain", "psi.some.avg10", "psi.full", "job.name", "flag", "1", "0",
                          "2.5", "60s", "1GiB", "'a'", "'cgroup:/*'", "true", "false", "null", "[1, 'a']"])


def _grow(inner):
    return st.one_of(
        st.tuples(inner, st.sampled_from(["&&", "||", "==", "!=", "<", "<=", ">", ">=", "in", "+", "-", "*",
                                          "/", "%"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(["!", "-"]), inner).map(lambda t: f"{t[0]}{t[1]}"),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})"),
        st.tuples(st.sampled_from(["min", "max", "matches"]), inner, inner).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
        st.tuples(st.sampled_from(["has", "abs", "size"]), inner).map(lambda t: f"{t[0]}({t[1]})"),
        inner.map(lambda t: f"[{t}]"),
    )


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-100, 100),
                   st.sampled_from(["a", "cgroup:/x"]))


def _dotted(env: dict, flat: bool) -> dict:
    """*env*, with its fields also under their dotted paths when *flat*
    (as the engine's domain_env gives PSI's)."""
    if flat:
        for path in ("psi.some.avg10", "psi.full", "job.name"):
            root, *fields = path.split(".")
            walk = env[root]
            for f in fields:
                walk = walk.get(f) if isinstance(walk, dict) else None
            env[path] = walk
    return env


ENVS = st.builds(_dotted, st.fixed_dictionaries({
    "tto": VALUES, "rate": VALUES, "domain": VALUES, "flag": VALUES,
    "psi": st.one_of(st.none(), st.fixed_dictionaries({"some": st.one_of(st.none(), st.fixed_dictionaries(
        {"avg10": VALUES})), "full": VALUES})),
    "job": st.one_of(st.none(), st.fixed_dictionaries({"name": VALUES})),
}), st.booleans())


@settings(deadline=None, derandomize=True, max_examples=1500)
@given(st.recursive(LEAVES, _grow, max_leaves=8), st.lists(ENVS, min_size=1, max_size=4))
def test_compiled_code_agrees_with_a_plain_interpreter(text, envs):
    cond = compile_condition(text)
    tree, _ = parse(text)
    for env in envs:
        got, want = cond.evaluate(env), interpret(tree, env)
        assert got == want and type(got) is type(want), (text, env)
    items = [(f"d{i}", env) for i, env in enumerate(envs)]
    assert cond.scan(items) == [d for d, env in items if interpret(tree, env) is True]
