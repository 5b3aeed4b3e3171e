"""The numbers about a model and an input, under both ``explain`` (pictures and pages) and ``serve`` (JSON).

Importing this package loads neither matplotlib, nor ``cnnlab.explain``, nor ``cnnlab.serve``.
"""
