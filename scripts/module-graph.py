#!/usr/bin/env python3
"""The import graph of src/'s top-level modules, and its cycles.

A module imports another when its code (tests left out) names
`crate::other` (or `crate::{other, ...}`); a parent and its own children are
one module. Prints each cycle (strongly connected component) and, with -v,
every edge. `--max-in-cycles N` fails (exit 1) when more than N modules sit
in cycles: a ratchet, lowered as the layering work removes them, until it
is 0 and the graph is acyclic.

    python3 scripts/module-graph.py [-v] [--max-in-cycles N] [SRC]
"""
import argparse
import collections
import os
import re
import sys


def graph(root):
    tops = set()
    for name in os.listdir(root):
        if name.endswith(".rs") and name not in ("lib.rs", "main.rs"):
            tops.add(name[:-3])
        elif os.path.isdir(os.path.join(root, name)):
            tops.add(name)
    edges = collections.defaultdict(set)
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(folder, name), root)
            top = rel.split(os.sep)[0]
            top = top[:-3] if top.endswith(".rs") else top
            if top in ("lib", "main"):
                continue
            with open(os.path.join(folder, name)) as f:
                text = f.read()
            text = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", text, flags=re.S)
            named = re.findall(r"crate::(\w+)", text)
            for group in re.findall(r"crate::\{([^}]*)\}", text):
                named += re.findall(r"(\w+)", group)
            for other in named:
                if other in tops and other != top:
                    edges[top].add(other)
    return tops, edges


def cycles(tops, edges):
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(tops):
        if v not in index:
            visit(v)
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src", nargs="?", default="src")
    ap.add_argument("-v", action="store_true")
    ap.add_argument("--max-in-cycles", type=int)
    a = ap.parse_args()
    tops, edges = graph(a.src)
    found = cycles(tops, edges)
    in_cycles = sum(len(c) for c in found)
    print(f"{len(tops)} top-level modules, {in_cycles} in import cycles")
    for c in found:
        print(f"  cycle of {len(c)}: {' '.join(c)}")
    if a.v:
        for k in sorted(edges):
            print(f"  {k} -> {' '.join(sorted(edges[k]))}")
    if a.max_in_cycles is not None and in_cycles > a.max_in_cycles:
        print(f"more than {a.max_in_cycles} modules in import cycles: an import points back up")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
