"""Model routing: which ModelPool serves a request sent to a ModelRoute's virtual model name."""
