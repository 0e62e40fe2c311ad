"""The chapters' figures, one module per chapter (named as in :mod:`nrc_utils.experiments`).

Each function takes the tidy tables an experiment returned and draws one figure in the book's
style (:mod:`nrc_utils.style`): hollow markers for networks that missed their stationarity
target, the residual in the legend or title where the theory is tested. It returns the
``matplotlib`` figure; the chapter shows it and writes the caption.
"""
