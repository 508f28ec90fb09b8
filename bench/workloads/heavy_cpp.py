"""Generate template-heavy C++ translation units and a Makefile that builds them.

    python3 heavy_cpp.py DIR [--units 4] [--types 16,12] [--funcs 2]

Each unit ``uN.cpp`` declares ``--types`` small structs (a comma-separated
list is used in turn, unit by unit, so the units differ in size), a ``std::variant`` of
all of them and ``--funcs`` functions that ``std::visit`` two such variants at
once (types x types instantiations each, every one a lambda that builds
std::map/std::vector/std::string work the optimiser inlines).  g++ -O2 keeps
all of that in memory at once and never hands it back before it exits
(its garbage collector keeps what it took): with 16 types and 2 functions
one unit peaks at ~410 MiB in cc1plus after ~19 s, 12 types at ~330 MiB
after ~11 s (g++ 12.2, this host), like a heavy real-world
file (Eigen, Boost.Spirit, range-v3).  ``DIR/Makefile`` compiles the units
into objects with ``$(CXX) -O2 -std=c++17 -c``; ``make -j2`` runs two
cc1plus side by side.
"""

import argparse
import os

UNIT = """\
#include <map>
#include <string>
#include <variant>
#include <vector>
#include <algorithm>
#include <numeric>
#include <functional>

namespace u{unit} {{
{structs}
using V = std::variant<{names}>;

template <class A, class B>
long combine(const A& a, const B& b) {{
    std::map<std::string, std::vector<long>> m;
    for (int i = 0; i < a.n + b.n; ++i)
        m[std::to_string(i * A::k + B::k)].push_back(i * a.n - b.n);
    std::vector<std::function<long(long)>> fs;
    for (auto& [key, vec] : m)
        fs.push_back([&vec, s = key.size()](long x) {{
            return std::accumulate(vec.begin(), vec.end(), x) * long(s);
        }});
    long r = 0;
    for (auto& f : fs) r += f(r);
    std::sort(m.begin()->second.begin(), m.begin()->second.end());
    return r;
}}
{funcs}
}}  // namespace u{unit}
"""

STRUCT = "struct T{i} {{ int n = {i}; static constexpr int k = {k}; }};"

FUNC = """
long f{j}(const V& x, const V& y) {{
    return std::visit([](const auto& a, const auto& b) {{ return combine(a, b) + {j}; }}, x, y);
}}
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir")
    p.add_argument("--units", type=int, default=4)
    p.add_argument("--types", default="16,12", help="types per unit, used in turn")
    p.add_argument("--funcs", type=int, default=2)
    args = p.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    types = [int(t) for t in args.types.split(",")]
    objs = []
    for u in range(args.units):
        n = types[u % len(types)]
        structs = "\n".join(STRUCT.format(i=i, k=(i * 7 + u) % 13 + 1) for i in range(n))
        names = ", ".join(f"T{i}" for i in range(n))
        funcs = "".join(FUNC.format(j=j) for j in range(args.funcs))
        with open(os.path.join(args.dir, f"u{u}.cpp"), "w") as f:
            f.write(UNIT.format(unit=u, structs=structs, names=names, funcs=funcs))
        objs.append(f"u{u}.o")
    with open(os.path.join(args.dir, "Makefile"), "w") as f:
        f.write(f"CXX ?= g++\nall: {' '.join(objs)}\n%.o: %.cpp\n\t$(CXX) -O2 -std=c++17 -c $< -o $@\n")


if __name__ == "__main__":
    main()
