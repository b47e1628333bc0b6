"""Strings that come from tasks (errors, results, names, reasons that quote them) shown as text.

Streamlit renders most text as Markdown: links, images (which the browser fetches), raw URLs
turned into links, `:emoji:` and `:material/icon:` shortcodes, `:red[...]` colour directives and
`$...$` LaTeX. A task's error is written by whoever wrote the task (or whoever fed it input), so
the dashboard never lets such a string be read as markup:

- long or multi-line text goes into elements that never parse Markdown (`st.code`, `st.text`,
  `st.json`, table cells);
- a short value inside one of the dashboard's own sentences goes through `markdown_text`, which
  escapes every character Markdown gives a meaning to.
"""

from __future__ import annotations

import re

# CommonMark lets every ASCII punctuation character be escaped with a backslash; escaped, none
# of them starts a link, an image, emphasis, code, HTML, a directive, a shortcode or LaTeX.
_ASCII_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
# GitHub-flavoured Markdown also turns `www.x.y`, `scheme://...` and `user@host.tld` into links,
# and does so on the text after escapes are resolved. An invisible WORD JOINER after each `.`,
# `:` and `@` breaks those patterns without changing what the reader sees.
_WORD_JOINER = "\u2060"
_LINK_TRIGGERS = re.compile(r"(\\[.:@])")
_LINE_BREAKS = re.compile(r"[\r\n]+")
_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")


def markdown_text(value: object) -> str:
    """`value` as Markdown that displays exactly its characters, on one line, and nothing else."""
    text = _LINE_BREAKS.sub(" ", str(value))
    escaped = _ASCII_PUNCTUATION.sub(r"\\\1", text)
    return _LINK_TRIGGERS.sub(r"\1" + _WORD_JOINER, escaped)


def displayed_text(markdown: str) -> str:
    """What a reader sees of `markdown_text(value)` (its inverse): for tests and copy buttons."""
    return _ESCAPED.sub(r"\1", markdown.replace(_WORD_JOINER, ""))
