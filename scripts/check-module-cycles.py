#!/usr/bin/env python3
"""Fails when the crate's modules import each other in a circle.

Every file under src/ is a module (`src/hub/feed.rs` is `hub::feed`, `src/app/mod.rs` is `app`).
Its edges are the `crate::…` and `super::…` paths in its code (comments left out), each taken to
the deepest module that exists (`crate::hub::ChannelId` → `hub`). Edges between a module and
its own submodules are not counted: a parent and its children are one unit. Prints the modules in dependency order, or every
cycle found, and exits 1 on a cycle.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
# `use crate::{a, b::c}` groups.
GROUP = re.compile(r"\b(crate|super)::\{([^}]*)\}")


def module_of(file: Path) -> tuple[str, ...]:
    parts = list(file.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def code(file: Path) -> str:
    lines = []
    for line in file.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("//"):
            continue
        lines.append(line.split(" //")[0])
    return "\n".join(lines)


def resolve(path: tuple[str, ...], modules: set[tuple[str, ...]]) -> tuple[str, ...] | None:
    for end in range(len(path), 0, -1):
        if path[:end] in modules:
            return path[:end]
    return None


def edges(modules: set[tuple[str, ...]], files: dict[tuple[str, ...], Path]):
    graph: dict[tuple[str, ...], set[tuple[str, ...]]] = {m: set() for m in modules}
    for module, file in files.items():
        text = code(file)
        paths = []
        for root, items in GROUP.findall(text):
            for item in items.split(","):
                name = item.strip().split(" ")[0]
                if name and name != "self":
                    paths.append((root, "::" + name))
        paths += PATH.findall(text)
        parent = module[:-1]
        for root, rest in paths:
            names = tuple(n for n in rest.split("::") if n)
            base = () if root == "crate" else parent
            target = resolve(base + names, modules)
            if target and target != module and not module[: len(target)] == target:
                graph[module].add(target)
    return graph


def cycles(graph):
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def main() -> int:
    files = {module_of(f): f for f in SRC.rglob("*.rs") if f.name != "main.rs"}
    modules = set(files)
    graph = edges(modules, files)
    name = lambda m: "::".join(m) or "lib"
    found = cycles(graph)
    if found:
        for cycle in found:
            print("cycle: " + " -> ".join(name(m) for m in cycle))
        return 1
    print(f"no module cycles among {len(modules)} modules:")
    for module in sorted(graph, key=name):
        print(f"  {name(module)} -> {', '.join(sorted(name(d) for d in graph[module])) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
