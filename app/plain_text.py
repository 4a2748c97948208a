"""Text from outside (query parameters, device payloads, rejected previews, names) made safe to show.

Streamlit renders the text of ``st.error``, ``st.markdown``, ``st.caption`` … as Markdown with some HTML, so a
crafted ``error_description`` could put a link or an image on the app's own address. ``plain`` turns any string
into Markdown that displays exactly those characters, on one line, cut to a length.
"""

from __future__ import annotations

import re
import string

MAX_CHARS = 300
ELLIPSIS = "…"
# CommonMark lets a backslash escape any ASCII punctuation; escaping them all also defuses Streamlit's own
# directives (":red[…]", ":material/…:", "$…$" LaTeX). GFM finds bare URLs and e-mail addresses ("https://…",
# "www.…", "a@b.c") in the parsed text, after escapes are resolved (Chromium showed the links), so an invisible
# WORD JOINER goes where those patterns need a particular next character.
_PUNCTUATION = re.compile("([" + re.escape(string.punctuation) + "])")
WORD_JOINER = "\u2060"
_AUTOLINK = re.compile(r"(?i)(:(?=//)|\bwww(?=\.)|@)")
_WHITESPACE = re.compile(r"\s+")


def cut(text: object, limit: int = MAX_CHARS) -> str:
    """``text`` as one line of at most ``limit`` characters (an ellipsis marks the cut); no escaping."""
    flat = _WHITESPACE.sub(" ", str(text)).strip()
    return flat if len(flat) <= limit else flat[: max(0, limit - 1)] + ELLIPSIS


def plain(text: object, limit: int = MAX_CHARS) -> str:
    """Markdown that shows ``text`` literally: one line, at most ``limit`` characters, no link, image or HTML."""
    unlinked = _AUTOLINK.sub(lambda found: found.group(1) + WORD_JOINER, cut(text, limit))
    return _PUNCTUATION.sub(r"\\\1", unlinked)
