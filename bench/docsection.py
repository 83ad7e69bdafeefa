"""Replace one benchmark's section of a Markdown doc, so re-running a bench updates its table in place."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, name: str, title: str, body: str) -> None:
    """Put `## title` + body between `<!-- name:start -->` and `<!-- name:end -->` (appended if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else ""
    section = f"{start}\n## {title}\n\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
