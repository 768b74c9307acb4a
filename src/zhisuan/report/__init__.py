"""Evaluation reports (SPEC EV-11): the data model, HTML, comparison.

- :mod:`zhisuan.bench.schema`: :class:`Item` / :class:`Report`, ``report.schema.json``, validation;
- :mod:`zhisuan.bench.environment_record`: the EV-1 environment record (collected by the suite);
- :mod:`zhisuan.report.html`: the self-contained ``report.html``;
- :mod:`zhisuan.report.compare`: several reports side by side (选型);
- :mod:`zhisuan.report.format`: the text formatting shared by the HTML and the CLI.

Importing this package is light (no matplotlib, no torch).

>>> from zhisuan.report import Item, load_report
>>> Item.skipped("EV-3.h2d", "EV-3", "Host to device", reason="no GPU").reason
'no GPU'
"""

from zhisuan.bench.schema import (
    CLAUSE_TITLES,
    CLAUSES,
    SCHEMA_VERSION,
    Item,
    Report,
    higher_is_better,
    json_schema,
    load_report,
    plain_json,
    spread_of,
    summarize,
    validate_report,
)

__all__ = [
    "CLAUSES",
    "CLAUSE_TITLES",
    "SCHEMA_VERSION",
    "Item",
    "Report",
    "higher_is_better",
    "json_schema",
    "load_report",
    "plain_json",
    "spread_of",
    "summarize",
    "validate_report",
]
