"""Human-feedback data: formats, the offline corpus, gold labelers and the demo data set."""
