"""The playground page's static files (``index.html``, ``app.js``, ``style.css``).

No Python lives here: the folder is a package only so the files ship as package data
and ``serve_app.routes.playground`` finds them with ``importlib.resources``.
"""
