"""The sentences the chapters glue, built from the run's tables, one module per chapter
(named as in :mod:`nrc_utils.experiments`).

Every function here is pure (tables and numbers in, Markdown text out) and every branch of it
runs in a unit test (``tests/test_prose_<chapter>.py``): both sides of each threshold, the
empty case, the case where every network missed its target. A chapter's text can then never
depend on which side of a threshold a CPU's rounding puts a number. Numbers in "at most" /
"at least" sentences are rounded in the safe direction (:func:`nrc_utils.report.rounded`).
"""
