"""Installation telemetry and the collector (issue 18; docs/privacy.md says what goes where).

``report`` (levels, the report and the exact request bytes), ``schedule`` (sans-I/O: once per
countme window, at a random moment in it), ``state`` (the first and the last window, in the data
directory so an upgrade keeps the age), ``sender`` (the asyncio task in ``meshota server``),
``collector`` (weekly totals only, public JSON/CSV/page with small cells suppressed).
"""
