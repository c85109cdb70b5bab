"""A local Sphinx extension for the HTML book (loaded through ``_config.yml``'s
``sphinx.local_extensions``).

Inline scripts added after the builder started: Sphinx 7.4 registers such a script twice
(once as filename ``None`` when it is added, once as ``''`` when the registry is copied
before writing), so every page carried sphinx-thebe's ``const THEBE_JS_URL = ...`` twice and
the browser reported "Identifier 'THEBE_JS_URL' has already been declared" on every page
(sphinx-togglebutton's inline script was doubled too). Jupyter Book 1.x pins Sphinx 7, so
this drops the second copy of any script with the same source, body and attributes.
tests/test_browser.py checks that no page logs a JavaScript error.
"""

from __future__ import annotations


def _key(script):
    attributes = tuple(sorted((k, str(v)) for k, v in script.attributes.items()))
    return (script.filename or "", attributes)


def drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        try:
            key = _key(script)
        except AttributeError:  # a plain string from an old-style extension: keep it
            kept.append(script)
            continue
        if key not in seen:
            seen.add(key)
            kept.append(script)
    if len(kept) != len(scripts):
        context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


# ----------------------------------------------------------------------------- citations
# The text cites author-year ("Rendle, 2010", bibtex_reference_style: author_year), but the
# bibliography's default labels are alpha codes ("[Ren10]", "[HPJ+14]"). One citation style:
# the bibliography is labelled "Rendle, 2010", "He et al., 2014", as the text cites it. The
# style "book" (bibtex_default_style in _config.yml) is pybtex's unsrt-alpha formatting with
# these labels and entries sorted by author and year.

from pybtex.plugin import register_plugin  # noqa: E402
from pybtex.style.formatting.unsrt import Style as _Unsrt  # noqa: E402
from pybtex.style.labels import BaseLabelStyle  # noqa: E402
from pybtex.style.sorting.author_year_title import SortingStyle as _ByAuthor  # noqa: E402


def _surname(person) -> str:
    return " ".join(person.prelast_names + person.last_names).replace("{", "").replace("}", "")


def author_year_label(entry) -> str:
    """``Rendle, 2010``; ``Harper and Konstan, 2015``; ``He et al., 2014``."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_surname(p) for p in people]
    if not names:
        who = entry.fields.get("title", entry.key)
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = [author_year_label(e) for e in sorted_entries]
        seen: dict[str, int] = {}
        for label in labels:
            seen[label] = seen.get(label, 0) + 1
        count: dict[str, int] = {}
        for label in labels:  # the same author and year twice: 2014a, 2014b
            if seen[label] > 1:
                count[label] = count.get(label, 0) + 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[count[label] - 1]
            else:
                yield label


class BookStyle(_Unsrt):
    default_label_style = "book_author_year"
    default_sorting_style = "author_year_title"


register_plugin("pybtex.style.labels", "book_author_year", AuthorYearLabels)
register_plugin("pybtex.style.formatting", "book", BookStyle)
_ = _ByAuthor  # imported so a missing sorting plugin fails here, at load time
