"""Small fixes to the HTML that Jupyter Book 1 writes, found by tests/browser.

* sphinx-thebe 0.3.1 adds an inline script (``const THEBE_JS_URL = …``) after the HTML builder
  is initialised; Sphinx 7.4 then lists it twice (once as filename None, once as ''), and the
  second ``const`` is a JavaScript SyntaxError on every page. Each page keeps the first copy.
"""


def _unique_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for js in context.get("script_files", []):
        key = (str(getattr(js, "filename", js) or ""), tuple(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
