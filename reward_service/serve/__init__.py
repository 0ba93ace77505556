"""The HTTP service: route → validate → tokenize → batch → infer → respond. Imports no torch."""
