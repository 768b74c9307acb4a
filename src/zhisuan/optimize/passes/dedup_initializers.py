"""Merge initializers with identical dtype, shape and bytes into one (name map: duplicate -> kept)."""

from __future__ import annotations

import hashlib
from typing import Any

from zhisuan.graph import index
from zhisuan.optimize.registry import PassContext, PassOutcome, register_pass


@register_pass("dedup-initializers", summary="Share identical initializers (same dtype, shape, bytes).")
def run(model: Any, ctx: PassContext) -> PassOutcome:
    graph = model.graph
    outcome = PassOutcome(model)
    protected = {v.name for v in graph.input} | index.output_names(graph)
    seen: dict[tuple[Any, ...], str] = {}
    dups: dict[str, str] = {}
    for init in graph.initializer:
        if init.name in protected or init.data_location == 1:  # external data: bytes not in memory
            continue
        data = init.raw_data if init.HasField("raw_data") else index.to_array(init).tobytes()
        key = (init.data_type, tuple(init.dims), hashlib.sha256(data).digest())
        if key in seen:
            dups[init.name] = seen[key]
        else:
            seen[key] = init.name
    if not dups:
        return outcome
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in dups:
                node.input[i] = dups[name]
        if any(True for _ in index.subgraphs(node)):
            for old, new in dups.items():
                for sub in index.subgraphs(node):
                    index.rename_in_subgraph(sub, old, new)
    kept = [i for i in graph.initializer if i.name not in dups]
    saved = sum(i.ByteSize() for i in graph.initializer if i.name in dups)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    outcome.renamed.update(dups)
    outcome.count("initializers_merged", len(dups))
    outcome.details.append(f"merged {len(dups)} duplicate initializer(s), {saved} bytes")
    return outcome
