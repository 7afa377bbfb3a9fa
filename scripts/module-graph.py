#!/usr/bin/env python3
"""The import graph of src/'s top-level modules (the layers), and its cycles;
then, inside each layer, the graph of its own modules.

A module imports another when its code (tests left out) names
`crate::other` (or `crate::{other, ...}`); a parent and its own children are
one module. Inside a layer, `crate::layer::sibling` and a direct child's
`super::sibling` count. Prints each cycle (strongly connected component)
and, with -v, every edge. `--max-in-cycles N` fails (exit 1) when more than
N top-level modules sit in cycles (0: the layers are acyclic);
`--max-sibling-cycle N` fails when a cycle inside a layer holds more than N
modules.

    python3 scripts/module-graph.py [-v] [--max-in-cycles N] [--max-sibling-cycle N] [SRC]
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


def strip_tests(text):
    return re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", text, flags=re.S)


def layer_graphs(root, tops):
    """For each top-level folder: its children and the edges between them."""
    out = {}
    for top in sorted(tops):
        folder = os.path.join(root, top)
        if not os.path.isdir(folder):
            continue
        kids = {n[:-3] if n.endswith(".rs") else n for n in os.listdir(folder)}
        kids = {k for k in kids if os.path.exists(os.path.join(folder, k + ".rs")) or os.path.isdir(os.path.join(folder, k))}
        edges = collections.defaultdict(set)
        for sub, _, files in os.walk(folder):
            for name in files:
                if not name.endswith(".rs"):
                    continue
                rel = os.path.relpath(os.path.join(sub, name), folder).split(os.sep)
                kid = rel[0][:-3] if rel[0].endswith(".rs") else rel[0]
                with open(os.path.join(sub, name)) as f:
                    text = strip_tests(f.read())
                named = re.findall(r"crate::" + top + r"::(\w+)", text)
                for group in re.findall(r"crate::" + top + r"::\{([^}]*)\}", text):
                    named += re.findall(r"(\w+)", group)
                if len(rel) == 1:
                    named += re.findall(r"\bsuper::(\w+)", text)
                    for group in re.findall(r"\bsuper::\{([^}]*)\}", text):
                        named += re.findall(r"(\w+)", group)
                for other in named:
                    if other in kids and other != kid:
                        edges[kid].add(other)
        out[top] = (kids, edges)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src", nargs="?", default="src")
    ap.add_argument("-v", action="store_true")
    ap.add_argument("--max-in-cycles", type=int)
    ap.add_argument("--max-sibling-cycle", type=int)
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
    failed = 0
    if a.max_in_cycles is not None and in_cycles > a.max_in_cycles:
        print(f"more than {a.max_in_cycles} modules in import cycles: an import points back up")
        failed = 1
    for top, (kids, kid_edges) in layer_graphs(a.src, tops).items():
        inner = cycles(kids, kid_edges)
        for c in inner:
            print(f"  inside {top}: cycle of {len(c)}: {' '.join(c)}")
            if a.max_sibling_cycle is not None and len(c) > a.max_sibling_cycle:
                print(f"  more than {a.max_sibling_cycle} modules of {top} in one cycle")
                failed = 1
        if a.v:
            for k in sorted(kid_edges):
                print(f"  {top}::{k} -> {' '.join(sorted(kid_edges[k]))}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
