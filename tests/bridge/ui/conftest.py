"""bridge.ui: the admin UI, over HTTP (test_ui_http.py) and in Debian's chromium (test_ui_browser.py).

Servers are per module (tests/support/ui.py); the browser tests save a screenshot of every page
under test-output/ui/ (gitignored).
"""
