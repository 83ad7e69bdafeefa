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


REBUILT = "Rows rebuilt later"


def carry_over(path: Path, name: str, body: str, order: list[str] | tuple[str, ...] = ()) -> str:
    """`body` merged with section `name` of `path` so that no run's lines are lost.

    A results table is rebuilt from run directories; a rebuild on a machine where some runs' directories are
    not (or a run is still before its first checkpoint) must not drop their rows. Kept verbatim: the rows and
    bullets of runs the new table has no row for, under the old header (machine, notes) that describes them.
    A run whose new row is the old row to the byte is not counted as rebuilt (its old header still holds);
    the runs whose rows changed are named on a line under that header, with the new header. Rows follow
    `order` (others after it, by name); a caption with no list is dropped. Carried rows keep their cells:
    a table whose columns change needs its section rewritten by hand."""
    text = path.read_text() if path.exists() else ""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        return body
    old_blocks = _blocks(text[text.index(start) : text.index(end)])[1:]  # past the marker and the title
    old = _anchored("\n\n".join("\n".join(b) for b in old_blocks))
    new = _anchored(body)
    new_rows, old_rows = new.get("table", {}), old.get("table", {})
    rebuilt = [k for k, line in new_rows.items() if old_rows.get(k) != line]
    if not set(old_rows) - set(rebuilt):
        return body  # every old row rebuilt with new numbers: the new header describes them all
    rank = {n: i for i, n in enumerate(order)}

    def by_order(key: str) -> tuple[int, str]:
        return rank.get(key, len(rank)), key

    def merged(anchor: str, lines: dict[str, str]) -> list[str]:
        out = {**{k: v for k, v in old.get(anchor, {}).items() if k not in rebuilt}, **lines}
        return [out[k] for k in sorted(out, key=by_order)]

    blocks = _blocks(body)
    first_table = next((i for i, b in enumerate(blocks) if _is_table(b)), len(blocks))
    rest: list[tuple[bool, list[str]]] = []  # (keyed, lines) from the table on
    caption, seen = "", set()
    for i, block in enumerate(blocks[first_table:], first_table):
        kind = _keyed(block)
        if kind is None:
            caption = block[0]
            seen.add(caption)
            rest.append((False, block))
            nxt = blocks[i + 1] if i + 1 < len(blocks) else None
            if nxt is None or _keyed(nxt) is None:  # a list this rebuild left empty
                rest.append((True, merged(caption, {})))
            continue
        anchor = "table" if kind[0] == "table" else caption
        rest.append((True, (block[:2] if anchor == "table" else []) + merged(anchor, kind[1])))
    # A list whose caption the new body lacks (reworded, or gone): kept at the end for the runs no new list has.
    listed = {k for anchor, lines in new.items() if anchor != "table" for k in lines}
    for old_caption, lines in old.items():
        if old_caption not in seen | {"table"}:
            orphans = {k: v for k, v in lines.items() if k not in listed and k not in rebuilt}
            rest += [(False, [old_caption]), (True, [orphans[k] for k in sorted(orphans, key=by_order)])]
    header = [kept for b in old_blocks[: _first_keyed(old_blocks)] if (kept := _without(b, rebuilt))]
    if rebuilt:
        new_header = " ".join(line for b in blocks[:first_table] for line in b)
        header.append([f"{REBUILT} ({', '.join(rebuilt)}): {new_header}"])
    out = list(header)
    for i, (keyed, block) in enumerate(rest):
        if keyed and not block:
            continue
        if not keyed and (i + 1 == len(rest) or not rest[i + 1][0] or not rest[i + 1][1]):
            continue  # a caption without a list
        out.append(block)
    return "\n\n".join("\n".join(b) for b in out) + "\n"


def _first_keyed(blocks: list[list[str]]) -> int:
    return next((i for i, b in enumerate(blocks) if _keyed(b)), len(blocks))


def _without(block: list[str], rebuilt: list[str]) -> list[str]:
    """A header block with the names in `rebuilt` taken out of a REBUILT line ([] once it names none)."""
    if not block[0].startswith(REBUILT):
        return block
    names, _, rest = block[0][len(REBUILT) :].strip().removeprefix("(").partition("): ")
    left = [n for n in (x.strip() for x in names.split(",")) if n and n not in rebuilt]
    return [f"{REBUILT} ({', '.join(left)}): {rest}", *block[1:]] if left else []
