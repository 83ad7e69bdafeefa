"""Replace one benchmark's section of a Markdown doc, so re-running a bench updates its table in place, and
swap in the small records (bench/records/NAME) such sections are rebuilt from."""

from __future__ import annotations

import shutil
from pathlib import Path


def swap_in(dst: Path, texts: dict[str, str]) -> None:
    """Make directory `dst` hold exactly `texts` (relative path -> content). Built beside it as `.NAME.tmp` and
    swapped in whole, so a record never mixes files of two runs that had the same name. A call stopped between
    the two renames (the new record whole in .tmp, the old one aside as .old, none in place) is finished first;
    with no `texts`, that is all it does."""
    tmp, old = dst.with_name(f".{dst.name}.tmp"), dst.with_name(f".{dst.name}.old")
    if old.is_dir() and not dst.exists():
        (tmp if tmp.is_dir() else old).rename(dst)
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    if not texts:
        return
    for rel, text in texts.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
    if dst.exists():
        dst.rename(old)
    tmp.rename(dst)
    shutil.rmtree(old, ignore_errors=True)


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


def _blocks(text: str) -> list[list[str]]:
    """Paragraphs of a Markdown body: runs of non-blank lines."""
    out: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip():
            out[-1].append(line)
        elif out[-1]:
            out.append([])
    return [b for b in out if b]


def _is_table(block: list[str]) -> bool:
    return len(block) >= 2 and block[0].startswith("|") and block[1].startswith("|---")


def _keyed(block: list[str]) -> tuple[str, dict[str, str]] | None:
    """A table (rows by their first cell) or a bullet list (items by the text before ':'), else None."""
    if _is_table(block):
        return "table", {line.split("|")[1].strip(): line for line in block[2:]}
    if all(line.startswith("- ") and ":" in line for line in block):
        return "bullets", {line[2:].split(":", 1)[0].strip(): line for line in block}
    return None


def _anchored(text: str) -> dict[str, dict[str, str]]:
    """Keyed blocks by anchor: 'table' for the table, the caption above it for a bullet list."""
    out, caption = {}, ""
    for block in _blocks(text):
        kind = _keyed(block)
        if kind is None:
            caption = block[0]
        else:
            out["table" if kind[0] == "table" else caption] = kind[1]
    return out


def carry_over(path: Path, name: str, body: str, order: list[str] | tuple[str, ...] = ()) -> str:
    """`body` merged with section `name` of `path` so that no run's lines are lost.

    A results table is rebuilt from run directories and records; a rebuild on a machine where some runs are
    neither (or a run is still before its first checkpoint) must not drop their rows. Kept verbatim: the rows
    and bullets of runs the new table has no row for; a run it has a row for is described by the new body
    alone. The section keeps one header, the new body's, so that header must hold for every row: what differs
    between runs (the machine, what shared the cores) goes in the rows and in bullets keyed by run
    (bench/learning.py: the `machine` column and NOTES), never into the header. Rows follow `order` (others
    after it, by name); a caption with no list is dropped; a list whose caption the new body lacks keeps, at
    the end, the lines of runs no new list or row has. A carried row whose number of cells is not the new
    table's raises ValueError: a table whose columns change needs its section rewritten by hand."""
    text = path.read_text() if path.exists() else ""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        return body
    old_blocks = _blocks(text[text.index(start) : text.index(end)])[1:]  # past the marker and the title
    old = _anchored("\n\n".join("\n".join(b) for b in old_blocks))
    new = _anchored(body)
    rebuilt = set(new.get("table", {}))  # a run with a new row: its old lines go, the new body describes it
    rank = {n: i for i, n in enumerate(order)}

    def by_order(key: str) -> tuple[int, str]:
        return rank.get(key, len(rank)), key

    def merged(anchor: str, lines: dict[str, str]) -> list[str]:
        out = {**{k: v for k, v in old.get(anchor, {}).items() if k not in rebuilt}, **lines}
        return [out[k] for k in sorted(out, key=by_order)]

    blocks = _blocks(body)
    first_table = next((i for i, b in enumerate(blocks) if _is_table(b)), len(blocks))
    out: list[tuple[bool, list[str]]] = [(False, b) for b in blocks[:first_table]]  # the new body's header
    caption, seen = "", set()
    for i, block in enumerate(blocks[first_table:], first_table):
        kind = _keyed(block)
        if kind is None:
            caption = block[0]
            seen.add(caption)
            out.append((False, block))
            nxt = blocks[i + 1] if i + 1 < len(blocks) else None
            if nxt is None or _keyed(nxt) is None:  # a list this rebuild left empty
                out.append((True, merged(caption, {})))
            continue
        if kind[0] == "table":
            cells = _cells(block[0])
            for key, line in old.get("table", {}).items():
                if key not in rebuilt and _cells(line) != cells:
                    raise ValueError(f"section {name!r}: row {key!r} has {_cells(line)} cells, the new table "
                                     f"{cells}: rewrite the section by hand")
            out.append((True, block[:2] + merged("table", kind[1])))
        else:
            out.append((True, merged(caption, kind[1])))
    # A list whose caption the new body lacks (reworded, or gone): kept at the end for the runs no new list has.
    listed = {k for anchor, lines in new.items() if anchor != "table" for k in lines}
    for old_caption, lines in old.items():
        if old_caption not in seen | {"table"}:
            orphans = {k: v for k, v in lines.items() if k not in listed and k not in rebuilt}
            out += [(False, [old_caption]), (True, [orphans[k] for k in sorted(orphans, key=by_order)])]
    kept = []
    for i, (keyed, block) in enumerate(out):
        if keyed and not block:
            continue
        if i >= first_table and not keyed and (i + 1 == len(out) or not out[i + 1][0] or not out[i + 1][1]):
            continue  # a caption without a list
        kept.append(block)
    return "\n\n".join("\n".join(b) for b in kept) + "\n"


def _cells(row: str) -> int:
    return row.strip().strip("|").count("|") + 1
