"""Rendering a report's parts: Markdown with PNG files beside it, or one self-contained HTML page.

A report is a list of parts: ("h", level, text) | ("p", text) | ("table", headers, rows) |
("img", file, caption). Both renderers take the same list, so both formats carry the same numbers.
"""
from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

Part = tuple


def to_markdown(parts: list[Part], base: Path) -> str:
    out = []
    for part in parts:
        if part[0] == "h":
            out.append("#" * part[1] + " " + part[2])
        elif part[0] == "p":
            out.append(part[1])
        elif part[0] == "table":
            headers, rows = part[1], part[2]
            out.append("\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                                 + ["| " + " | ".join(r) + " |" for r in rows]))
        elif part[0] == "img":
            link = os.path.relpath(Path(part[1]).resolve(), Path(base).resolve())
            out.append(f"![{part[2]}]({Path(link).as_posix()})\n\n*{part[2]}*")
    return "\n\n".join(out) + "\n"


def to_html(parts: list[Part]) -> str:
    body = []
    for part in parts:
        if part[0] == "h":
            body.append(f"<h{part[1]}>{html.escape(part[2])}</h{part[1]}>")
        elif part[0] == "p":
            text = html.escape(part[1]).replace("`", "")
            body.append("<p>" + re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text) + "</p>")
        elif part[0] == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in part[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in part[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif part[0] == "img":
            data = base64.b64encode(Path(part[1]).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(part[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(part[2])}</figcaption></figure>")
    style = ("body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}th{background:#f3f3f3}img{max-width:100%}"
             "figcaption{font-size:0.85em;color:#555}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Gardener report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
